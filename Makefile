# deblur: `make repro` runs the whole pipeline, `make test` the tests. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deblur-requirements
# The environment is rebuilt only when what it is built from changes (content, not mtime).
REQ_HASH := $(shell cat requirements.lock pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)

export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PYTHONUNBUFFERED := 1
# dvc.yaml's stages call `deblur`: the venv's, whether or not the user activated it.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup chromium postgresql java spark-cluster repro test test-slow lint format bench serve mlflow-ui mlflow-server sweep runs clean help

help:
	@echo "make repro   set up .venv if needed, then run the whole DVC pipeline (dvc repro)"
	@echo "make test    set up .venv if needed, then lint and run the tests"
	@echo "make sweep   a grid of DVC experiments, two at a time, into the tracking server"
	@echo "make lint | format | bench | serve | mlflow-ui | mlflow-server | runs | test-slow | clean"
	@echo "make spark-cluster   a Spark standalone master + worker on 127.0.0.1 (docs/batch.md)"

# $(call apt_install,MISSING,PACKAGE,WHAT NEEDS IT): Debian's PACKAGE where the shell test
# MISSING holds and apt-get can run (root, or sudo without a password). A failed install
# only warns: what needs it then skips, or fails under CI=true, and says why.
define apt_install
	@if $(1) && command -v apt-get >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then sudo=; \
		elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
		else echo "setup: $(2) missing; apt-get install $(2) as root"; exit 0; fi; \
		echo "setup: installing Debian's $(2) for $(3)"; \
		{ $$sudo apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(2) >/dev/null; } \
		|| echo "setup: warning: could not install $(2); $(3) will not run"; \
	fi
endef

setup: postgresql java
	@if [ -x $(BIN)/python ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$(REQ_HASH)" ]; then \
		echo "setup: .venv is up to date"; \
	else \
		set -e; \
		[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
		$(BIN)/python -m pip install -q --upgrade pip; \
		$(BIN)/python -m pip install -q -r requirements.lock; \
		$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .; \
		echo "$(REQ_HASH)" > $(STAMP); \
		echo "setup: .venv ready"; \
	fi

# The browser test drives Debian's chromium (Playwright cannot download its own here).
# Installed only where it is missing and apt-get can run (root, or sudo without a password);
# a failed install only warns: the test then skips, or fails under CI=true.
CHROMIUM := /usr/bin/chromium
chromium:
	$(call apt_install,[ ! -x $(CHROMIUM) ],chromium,the browser test)

# The team tests run Debian's PostgreSQL 15 (tests/support/team_servers.py), installed like chromium.
POSTGRES := /usr/lib/postgresql/15/bin/initdb
postgresql:
	$(call apt_install,[ ! -x $(POSTGRES) ],postgresql-15,the team tests)

# `deblur batch` runs on Apache Spark, whose JVM needs a Java runtime (17+). Where `java` is
# missing and apt-get can run, Debian's headless JRE goes in: ~45 MB to download, ~200 MB
# installed with its libraries. A failed install only warns: batch then says what to do.
java:
	$(call apt_install,! command -v java >/dev/null && [ -z "$$JAVA_HOME" ],openjdk-17-jre-headless,deblur batch and its tests)

# A Spark standalone master and one worker on 127.0.0.1 until Ctrl-C (REST and remote
# access off), for `deblur batch --master spark://127.0.0.1:PORT` (it prints the URL).
SPARK_CORES ?= 2
SPARK_MEMORY ?= 4g
spark-cluster: setup
	$(BIN)/python -m deblur.batch.cluster --cores $(SPARK_CORES) --memory $(SPARK_MEMORY)

# Exit code 3 from promote means "the champion stays": not a failure of the pipeline.
repro: setup
	$(BIN)/dvc repro
	@$(BIN)/dvc metrics show
	$(BIN)/deblur promote gan || [ $$? -eq 3 ]
	$(BIN)/deblur promote ae || [ $$? -eq 3 ]

test: setup chromium lint
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/deblur bench

serve: setup
	$(BIN)/deblur serve

# MLflow 3.17's UI opens the GenAI view unless told: the link below opens the runs table.
mlflow-ui: setup
	@echo "open http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# A team's tracking server (docs/scale-out.md): MLFLOW_BACKEND (the SQLite file by default,
# or a postgresql:// URI), artifacts through the server, MLFLOW_AUTH=basic for logins.
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5001
mlflow-server: setup
	BIN=$(BIN) MLFLOW_HOST=$(MLFLOW_HOST) MLFLOW_PORT=$(MLFLOW_PORT) pipeline/team/mlflow-server.sh

# A grid of experiments side by side (README, "Sweeps"): queued with `dvc exp run --queue`,
# run SWEEP_JOBS at a time by `dvc queue start`, recorded in the tracking server that
# `make mlflow-server` starts (SQLite takes one writer, so parallel runs need the server).
# Comma lists are a grid: SWEEP='-S train.gan.lr=0.0005,0.002 -S train.ae.lr=0.0005,0.002'.
SWEEP ?= -S train.gan.lr=0.0005,0.002
SWEEP_JOBS ?= 2
SWEEP_URI ?= http://$(MLFLOW_HOST):$(MLFLOW_PORT)
sweep: setup
	@$(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=5)' \
		$(SWEEP_URI) 2>/dev/null || { \
		echo "sweep: no tracking server at $(SWEEP_URI); run 'make mlflow-server' first"; exit 1; }
	MLFLOW_TRACKING_URI=$(SWEEP_URI) $(BIN)/dvc exp run --queue $(SWEEP)
	MLFLOW_TRACKING_URI=$(SWEEP_URI) $(BIN)/dvc queue start -j $(SWEEP_JOBS)
	@# dvc queue start returns at once; wait until no task is queued or running
	@while $(BIN)/dvc queue status | grep -qE '\b(Queued|Running)\b'; do sleep 10; done
	@$(BIN)/dvc queue status   # a Failed task: dvc queue logs NAME
	$(BIN)/dvc exp show --only-changed --no-pager
	MLFLOW_TRACKING_URI=$(SWEEP_URI) $(BIN)/deblur runs

# Every pipeline run in the store, newest first (MLFLOW_TRACKING_URI, else ./mlflow.db).
runs: setup
	$(BIN)/deblur runs

clean:
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info
