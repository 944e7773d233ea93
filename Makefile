# mnist-hitl: `make run` starts everything, `make test` runs every test. `make help` lists the rest.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run app init test test-fast lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its test tools

run: $(STAMP) ## install, train the first model if none is deployed, start the app and every service
	$(BIN)/mnist-hitl run

app: $(STAMP) ## install, train the first model if needed, serve only the drawing app
	$(BIN)/mnist-hitl init
	$(BIN)/mnist-hitl app

init: $(STAMP) ## train and deploy the first model if none is deployed
	$(BIN)/mnist-hitl init

test: $(STAMP) ## install, then run every test (unit, notebooks, browser, Prometheus, stack)
	$(BIN)/python -m pytest -p no:cacheprovider -ra

# pytest plugins the unit tier does not use (the API's and the fuzz tests' own): 3 s less to start
UNIT_SKIPS = -p no:schemathesis -p no:hypothesispytest -p no:faker

test-fast: $(STAMP) ## install, then run the unit tier (tests/unit): no model, server or browser, under a minute
	$(BIN)/python -m pytest -p no:cacheprovider -ra $(UNIT_SKIPS) -m "not slow and not browser and not model" tests/unit

lint: $(STAMP) ## ruff: the linter and the formatter's check (configured in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP) ## print the measured figures (accuracy, latency, memory, the learning loop)
	$(BIN)/python bench/predict_latency.py
	$(BIN)/python bench/app_kernel.py
	$(BIN)/python bench/stack_memory.py
	$(BIN)/python bench/review.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/big_picture.py
	$(BIN)/python bench/review_queue.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/scale_store.py
	$(BIN)/python bench/scale_search.py
	$(BIN)/python bench/active_learning.py --strategy queue
	$(BIN)/python bench/active_learning.py --strategy random
