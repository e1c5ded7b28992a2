# Thin verbs over the project's tools; `make help` lists them.
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Two stamps: RUNTIME is what serving and training need (requirements.txt and the package, for
# `make run`); INSTALLED adds the development tools on top of it, in the same venv.
RUNTIME := $(VENV)/.runtime
INSTALLED := $(VENV)/.installed
PORT ?= 8000
MODEL_DIR ?= models
export PORT MODEL_DIR

.PHONY: help install train serve run test lint clean

help: ## List the verbs and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(RUNTIME): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps --editable .
	touch $@

$(INSTALLED): $(RUNTIME) requirements-dev.txt
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(INSTALLED) ## Create .venv with skserve (editable), its pinned runtime and the development tools

train: $(RUNTIME) ## Train on the bundled iris data into MODEL_DIR (options: ARGS="--data diabetes --model random_forest")
	$(PYTHON) train.py --output $(MODEL_DIR) $(ARGS)

serve: $(RUNTIME) ## Serve the model in MODEL_DIR on PORT (default 8000) with `skserve serve` (gunicorn)
	$(VENV)/bin/skserve serve $(MODEL_DIR)

run: $(RUNTIME) ## Install only what serving needs, train if MODEL_DIR holds no model yet, then serve it
	@test -f $(MODEL_DIR)/model.json || $(PYTHON) train.py --output $(MODEL_DIR)
	$(VENV)/bin/skserve serve $(MODEL_DIR)

test: $(INSTALLED) ## Run every test: unit, API, end-to-end over gunicorn, the Docker image and the Swarm cluster
	$(VENV)/bin/pytest --cov --cov-report=term

lint: $(INSTALLED) ## Check with ruff (lint and format) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean: ## Remove the venv, caches and trained models
	rm -rf $(VENV) bench/.peers tests/.peers .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf src/*.egg-info
	find models -mindepth 1 ! -name .gitkeep -delete

# ---------------------------------------------------------------------------------------------
# Docker: the image trains its model from the code in it and serves it (docs/docker.md).
#   make docker-build IMAGE=skserve:1 BASE_IMAGE=python:3.12-slim@sha256:...   pin the base
#   make docker-base && make docker-run BASE_IMAGE=skserve-base:bookworm       without a registry
# DOCKER_BUILD: the build command, which must have BuildKit; empty picks `docker buildx build`
#   when the buildx plugin is installed, else a docker client older than 23 (built-in BuildKit).
# PIP_CERT (pip's own variable): when set, its CA bundle reaches pip in the build as a BuildKit
#   secret, for TLS-intercepting proxies; it is never stored in a layer. `PIP_CERT=` turns it off.
# TRAIN_MODEL, TRAIN_SEED, TRAIN_DATA (a CSV under data/), TRAIN_TARGET, TRAIN_TASK: training options.
# MODEL_FILE (a fitted estimator saved with joblib.dump), SAMPLE (a CSV of rows it accepts) and
#   optionally TARGET (the sample's column of true values): package that model instead of training.
IMAGE ?= skserve:latest
BASE_IMAGE ?= python:3.12-slim
LOCAL_BASE ?= skserve-base:bookworm
DOCKER_BUILD ?=
DOCKER_BUILD_FLAGS ?=
TRAIN_MODEL ?= linear
TRAIN_SEED ?= 42
TRAIN_DATA ?=
TRAIN_TARGET ?=
TRAIN_TASK ?=
MODEL_FILE ?=
SAMPLE ?=
TARGET ?=

.PHONY: docker-build docker-run docker-base docker-test docker-lint

docker-build: ## Build the image IMAGE on BASE_IMAGE; trains inside, or packages MODEL_FILE with SAMPLE [TARGET]
	IMAGE='$(IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' DOCKER_BUILD='$(DOCKER_BUILD)' PIP_CERT='$(PIP_CERT)' \
	TRAIN_MODEL='$(TRAIN_MODEL)' TRAIN_SEED='$(TRAIN_SEED)' TRAIN_DATA='$(TRAIN_DATA)' TRAIN_TARGET='$(TRAIN_TARGET)' TRAIN_TASK='$(TRAIN_TASK)' \
	MODEL_FILE='$(MODEL_FILE)' SAMPLE='$(SAMPLE)' TARGET='$(TARGET)' \
	docker/build-image.sh $(DOCKER_BUILD_FLAGS)

docker-run: docker-build ## Build if needed, then run IMAGE in the foreground on http://127.0.0.1:PORT (Ctrl-C stops)
	@echo "serving $(IMAGE) on http://127.0.0.1:$(PORT) (ready in a few seconds; Ctrl-C stops it)"
	docker run --rm --read-only --tmpfs /tmp --publish 127.0.0.1:$(PORT):8000 $(IMAGE)

docker-base: ## Build the registry-free base image LOCAL_BASE (default skserve-base:bookworm) from Debian packages
	docker/build-base.sh '$(LOCAL_BASE)'

docker-test: $(INSTALLED) ## Run only the tests that build and run the image on the real Docker engine
	$(VENV)/bin/pytest -m docker

docker-lint: $(INSTALLED) ## Check the Dockerfiles (the image's, the load balancer's, deploy/prometheus's) with hadolint
	$(VENV)/bin/hadolint Dockerfile docker/haproxy.Dockerfile deploy/prometheus/Dockerfile

# `make lint` checks the Dockerfile too.
lint: docker-lint

# ---------------------------------------------------------------------------------------------
# Scale out (docs/cluster.md): replicas on a single-node Docker Swarm behind HAProxy, which checks
# /ready and retries a failed request on another replica. Without a registry, as for docker-build:
#   make docker-base && make cluster-up REPLICAS=3 BASE_IMAGE=skserve-base:bookworm
#   make cluster-update TRAIN_SEED=7 BASE_IMAGE=skserve-base:bookworm   a new model, rolled out
# CLUSTER_STACK: the stack's name; CLUSTER_IMAGE: the images' repository (tags cluster-<id>);
# UPDATE_IMAGE: cluster-update rolls out this built image instead of building one.
# PROMETHEUS=1: cluster-up runs Prometheus in the stack too, on PROMETHEUS_PORT (deploy/swarm/prometheus.yml).
REPLICAS ?= 2
CLUSTER_PORT ?= 8080
PROMETHEUS ?=
PROMETHEUS_PORT ?= 9090
CLUSTER_STACK ?= skserve
CLUSTER_IMAGE ?= skserve
UPDATE_IMAGE ?=
CLUSTER := REPLICAS='$(REPLICAS)' CLUSTER_PORT='$(CLUSTER_PORT)' CLUSTER_STACK='$(CLUSTER_STACK)' \
	CLUSTER_IMAGE='$(CLUSTER_IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' UPDATE_IMAGE='$(UPDATE_IMAGE)' \
	PROMETHEUS='$(PROMETHEUS)' PROMETHEUS_PORT='$(PROMETHEUS_PORT)' deploy/swarm/cluster.sh

.PHONY: cluster-up cluster-update cluster-scale cluster-status cluster-down

cluster-up: ## Build, deploy REPLICAS (default 2) behind HAProxy on CLUSTER_PORT (8080), wait until all are healthy; PROMETHEUS=1 adds Prometheus
	@$(CLUSTER) up

cluster-update: ## Build with the training options given (TRAIN_MODEL, TRAIN_SEED, ...) and roll it out; fails if rolled back
	@$(CLUSTER) update

cluster-scale: ## Scale the replicas to REPLICAS and wait until all are healthy
	@$(CLUSTER) scale

cluster-status: ## Show the services, each replica's image and state, the last update and the load balancer's answer
	@$(CLUSTER) status

cluster-down: ## Remove the stack and its images; leave the swarm only if cluster-up made it
	@$(CLUSTER) down

# ---------------------------------------------------------------------------------------------
# The docs page (GET /): docs/screenshot.png is what the browser test sees (needs Debian's chromium).
.PHONY: screenshot

screenshot: $(INSTALLED) ## Refresh docs/screenshot.png: headless Chromium fills the docs page's form and predicts
	SKSERVE_SCREENSHOT=$(CURDIR)/docs/screenshot.png $(VENV)/bin/pytest -q \
		tests/test_docs.py::test_filling_the_form_and_clicking_predict_shows_the_model_answer

# ---------------------------------------------------------------------------------------------
# Benchmark (bench/): skserve against a naive Flask app, side by side, every answer checked.
#   make bench                                  3 rounds x 5 s per load: pipeline, forest and the mixed-type penguins model (~16 min, with the thread-pool and bulk steps)
#   make bench BENCH_ROUNDS=1 BENCH_DURATION=2 BENCH_MODELS=pipeline      a quick look
#   make bench BENCH_PEERS=mlflow               also MLflow's scoring server (own venv, bench/.peers/)
#   make bench BENCH_PEERS=floor                also the floor: Flask answering from a table, no model work
#   make bench BENCH_PEERS=bare                 also skserve's parse, score and encode alone, without logs, metrics or checks
#   make bench-cluster BASE_IMAGE=skserve-base:bookworm    the Swarm stack (bench/cluster.py; ~15 min with its 10-min soak)
# Needs two cores and wrk (installed with apt-get when missing, so run as root).
BENCH_INSTALLED := $(VENV)/.bench-installed
WRK := command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

.PHONY: bench bench-profile bench-cluster

$(BENCH_INSTALLED): $(INSTALLED) bench/requirements.txt
	$(PYTHON) -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: $(BENCH_INSTALLED) ## Benchmark skserve vs a naive Flask app; writes bench/results/ (see bench/run.py)
	@$(WRK)
	$(PYTHON) bench/run.py

bench-cluster: $(BENCH_INSTALLED) ## Cluster figures via HAProxy (1, 2 replicas) vs one container, rollout time, soak; bench/results/cluster.md
	@$(WRK)
	BASE_IMAGE='$(BASE_IMAGE)' $(PYTHON) bench/cluster.py

bench-profile: $(BENCH_INSTALLED) ## Sample a loaded skserve worker with py-spy; writes bench/results/profile.md
	@$(WRK)
	$(PYTHON) bench/profile.py
