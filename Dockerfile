# skserve image: trains the model from the code in this build context, then serves it with gunicorn.
#
# Build with BuildKit (RUN --mount needs it): `make docker-build`, which also passes pip's CA
# bundle as a secret and stamps the model's version and sha256 as labels.
# There is deliberately no "# syntax=" line: it would make the build pull a frontend image from a
# registry; the frontend built into BuildKit supports everything used here.
#
# The base defaults to the official image. Pin it by digest for repeatable builds:
#   make docker-build BASE_IMAGE=python:3.12-slim@sha256:<digest>
# (the digest of a pulled image: docker inspect --format '{{index .RepoDigests 0}}' python:3.12-slim).
# Without a registry: `make docker-base` builds skserve-base:bookworm from Debian packages, then
#   make docker-build BASE_IMAGE=skserve-base:bookworm
# Both stages must use the same base: the venv refers to the base's interpreter by path.
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes, not the code.
# pip-ca is the optional CA bundle of a TLS-intercepting proxy (a BuildKit secret, never stored in
# a layer); without it pip uses the base image's CAs. Tests and pip are removed afterwards: the
# runtime image copies this venv and needs neither.
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-ca,required=false \
    set -eu; \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    pip install --requirement requirements.txt; \
    pip check; \
    find /opt/venv/lib -depth -type d -name tests -exec rm -rf {} +; \
    pip uninstall --yes pip setuptools

# Training options. TRAIN_DATA is a CSV path inside the build context (empty: the bundled iris
# data) and TRAIN_TARGET its target column; the CSV stays in this stage. TRAIN_TASK empty: inferred.
ARG TRAIN_MODEL=linear
ARG TRAIN_SEED=42
ARG TRAIN_DATA=""
ARG TRAIN_TARGET=""
ARG TRAIN_TASK=""
# Or a model fitted elsewhere, packaged instead of training (`skserve package`): MODEL_FILE is its
# joblib file and SAMPLE a CSV of rows it accepts, both inside the build context (build-image.sh
# stages them there), TARGET the sample's column of true values. The sample stays in this stage.
ARG MODEL_FILE=""
ARG SAMPLE=""
ARG TARGET=""

COPY src/ src/
COPY train.py ${TRAIN_DATA} ${MODEL_FILE} ${SAMPLE} ./
# The artifact is made world-readable (it is written via mkstemp, mode 0600) and stays root-owned,
# so the runtime user can read it but not change it.
RUN set -eu; \
    if [ -n "$TRAIN_DATA" ]; then set -- --data "$(basename "$TRAIN_DATA")" --target "$TRAIN_TARGET"; fi; \
    if [ -n "$TRAIN_TASK" ]; then set -- "$@" --task "$TRAIN_TASK"; fi; \
    if [ -n "$MODEL_FILE" ]; then \
        set -- --sample "$(basename "$SAMPLE")"; \
        if [ -n "$TARGET" ]; then set -- "$@" --target "$TARGET"; fi; \
        PYTHONPATH=src python -m skserve.packaging "$(basename "$MODEL_FILE")" --output models "$@"; \
    else \
        python train.py --model "$TRAIN_MODEL" --seed "$TRAIN_SEED" --output models "$@"; \
    fi; \
    chmod 0644 models/*; \
    python -m compileall -q src

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG BASE_IMAGE
LABEL org.opencontainers.image.title="skserve" \
      org.opencontainers.image.description="HTTP prediction server for one scikit-learn model" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# A numeric, unprivileged user that owns nothing in the image: code and model stay read-only.
# --no-log-init: no lastlog/faillog entries, which grow with the uid.
RUN groupadd --gid 10001 skserve \
    && useradd --uid 10001 --gid skserve --no-log-init --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin skserve

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_DIR=/app/models \
    PORT=8000

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app/src src/
COPY --from=build /app/models models/
COPY gunicorn.conf.py ./
COPY docker/ready-probe /usr/local/bin/

USER 10001:10001
EXPOSE 8000

# docker/ready-probe asks GET /ready with bash's /dev/tcp (slim images have no curl; a Python client
# costs about 60 ms more CPU per check). The 1 s interval is what keeps start-to-healthy under 5 s: Docker
# 20.10 runs the first check one interval after start and has no --start-interval. Raise it with
# `docker run --health-interval`.
HEALTHCHECK --interval=1s --timeout=2s --start-period=30s --retries=3 CMD ["ready-probe"]

# Exec form: gunicorn is PID 1 and gets SIGTERM from `docker stop` itself, so it drains
# in-flight requests (graceful_timeout in gunicorn.conf.py) and exits 0.
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
