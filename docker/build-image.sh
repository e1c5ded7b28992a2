#!/usr/bin/env bash
# Build the skserve image with BuildKit, then label it with the model it contains.
#
#   docker/build-image.sh [extra docker build flags, e.g. --no-cache]
#
# Environment (the Makefile's variables of the same names):
#   IMAGE          tag to build (default skserve:latest)
#   BASE_IMAGE     base of both stages (default: the Dockerfile's, python:3.12-slim)
#   TRAIN_MODEL, TRAIN_SEED, TRAIN_DATA, TRAIN_TARGET, TRAIN_TASK   training options (see Dockerfile)
#   MODEL_FILE, SAMPLE, TARGET   a fitted estimator's joblib file and a sample CSV, anywhere on this
#                  machine, to package instead of training (`skserve package`); TARGET is optional.
#   PIP_CERT       pip's CA bundle; when set, passed to the build as the BuildKit secret `pip-ca`
#                  so pip trusts a TLS-intercepting proxy (never stored in a layer). Empty: none.
#   DOCKER_BUILD   build command; empty picks one that has BuildKit (needed for RUN --mount):
#                  `docker buildx build` when the buildx plugin is installed, else a docker client
#                  older than 23 (built-in BuildKit, e.g. Debian's docker.io at /usr/bin/docker).
#   CONTEXT        build context directory (default: the current directory)
set -euo pipefail

image="${IMAGE:-skserve:latest}"
context="${CONTEXT:-.}"

buildkit_command() {
    if docker buildx version >/dev/null 2>&1; then
        echo "docker buildx build --load"
        return
    fi
    # A client >= 23 without the buildx plugin refuses DOCKER_BUILDKIT=1; older ones have it built in.
    local client version
    for client in docker /usr/bin/docker /usr/local/bin/docker; do
        version="$("$client" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')" || true
        if [ -n "$version" ] && [ "$version" -lt 23 ]; then
            echo "env DOCKER_BUILDKIT=1 $client build"
            return
        fi
    done
    echo "build-image.sh: no BuildKit-capable docker build found: install the buildx plugin" \
         "(docker-buildx-plugin or docker-buildx) or set DOCKER_BUILD" >&2
    return 1
}

read -r -a build <<<"${DOCKER_BUILD:-$(buildkit_command)}"

args=(--tag "$image")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
for name in TRAIN_MODEL TRAIN_SEED TRAIN_DATA TRAIN_TARGET TRAIN_TASK TARGET; do
    [ -n "${!name:-}" ] && args+=(--build-arg "$name=${!name}")
done
iidfile="$(mktemp)"
staged=""
trap 'rm -f "$iidfile"; [ -z "$staged" ] || rm -rf "$staged"' EXIT
if [ -n "${MODEL_FILE:-}" ]; then
    [ -n "${SAMPLE:-}" ] || { echo "build-image.sh: MODEL_FILE needs SAMPLE, a CSV of rows the model accepts" >&2; exit 1; }
    for file in "$MODEL_FILE" "$SAMPLE"; do
        [ -r "$file" ] || { echo "build-image.sh: $file is not a readable file" >&2; exit 1; }
    done
    # The files may be anywhere; the build sees only its context, so they are staged in it for
    # this build (the .dockerignore allow-list lets .skserve-model-*/ in) and removed afterwards.
    staged="$(mktemp -d "$context/.skserve-model-XXXXXX")"
    cp "$MODEL_FILE" "$SAMPLE" "$staged/"
    relative="${staged#"$context"/}"
    args+=(--build-arg "MODEL_FILE=$relative/$(basename "$MODEL_FILE")")
    args+=(--build-arg "SAMPLE=$relative/$(basename "$SAMPLE")")
fi
if [ -n "${PIP_CERT:-}" ]; then
    [ -r "$PIP_CERT" ] || { echo "build-image.sh: PIP_CERT=$PIP_CERT is not a readable file" >&2; exit 1; }
    args+=(--secret "id=pip-ca,src=$PIP_CERT")
fi

previous="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
"${build[@]}" "${args[@]}" --iidfile "$iidfile" "$@" "$context"
unlabelled="$(cat "$iidfile")"

# The model's version and sha256 are known only once training in the build has run, and a
# Dockerfile cannot set labels from a file, so a second, layer-free build adds them.
mapfile -t labels < <(docker run --rm --network none --entrypoint python "$image" -c '
import json
card = json.load(open("/app/models/model.json"))
print("org.opencontainers.image.version=" + card["version"])
print("skserve.model.name=" + card["name"])
print("skserve.model.version=" + card["version"])
print("skserve.model.sha256=" + card["sha256"])
print("skserve.model.estimator=" + card["estimator"]["name"])
')
revision="$(git -C "$context" rev-parse HEAD 2>/dev/null || true)"
[ -n "$revision" ] && labels+=("org.opencontainers.image.revision=$revision")

label_args=()
for label in "${labels[@]}"; do label_args+=(--label "$label"); done
printf 'FROM %s\n' "$image" | "${build[@]}" --quiet "${label_args[@]}" --tag "$image" - >/dev/null

# The unlabelled image and the one this build replaced are now untagged: drop them, unless a
# container still uses them, rather than leave two dangling images behind every build.
current="$(docker image inspect --format '{{.Id}}' "$image")"
for old in "$unlabelled" "$previous"; do
    if [ -n "$old" ] && [ "$old" != "$current" ] \
        && [ "$(docker image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
        docker image rm "$old" >/dev/null 2>&1 || true
    fi
done
echo "built $image: model ${labels[1]#*=} version ${labels[2]#*=}," \
     "$(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
