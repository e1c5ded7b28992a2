# Thin verbs over the project's tools; `make help` lists them.
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PORT ?= 8000
MODEL_DIR ?= models
export PORT MODEL_DIR

.PHONY: help install train serve run test lint clean

help: ## List the verbs and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(INSTALLED) ## Create .venv with the pinned runtime and development packages

train: $(INSTALLED) ## Train on the bundled iris data into MODEL_DIR (options: ARGS="--model random_forest")
	$(PYTHON) train.py --output $(MODEL_DIR) $(ARGS)

serve: $(INSTALLED) ## Serve the model in MODEL_DIR with gunicorn on PORT (default 8000)
	$(VENV)/bin/gunicorn -c gunicorn.conf.py

run: $(INSTALLED) ## Train if MODEL_DIR holds no model yet, then serve it
	@test -f $(MODEL_DIR)/model.json || $(PYTHON) train.py --output $(MODEL_DIR)
	$(VENV)/bin/gunicorn -c gunicorn.conf.py

test: $(INSTALLED) ## Run every test: unit, API, end-to-end over gunicorn, and the Docker image
	$(VENV)/bin/pytest --cov --cov-report=term

lint: $(INSTALLED) ## Check with ruff (lint and format) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean: ## Remove the venv, caches and trained models
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find models -mindepth 1 ! -name .gitkeep -delete

# ---------------------------------------------------------------------------------------------
# The docs page (GET /): docs/screenshot.png is what the browser test sees (needs Debian's chromium).
.PHONY: screenshot

screenshot: $(INSTALLED) ## Refresh docs/screenshot.png: headless Chromium fills the docs page's form and predicts
	SKSERVE_SCREENSHOT=$(CURDIR)/docs/screenshot.png $(VENV)/bin/pytest -q \
		tests/test_docs.py::test_filling_the_form_and_clicking_predict_shows_the_model_answer
