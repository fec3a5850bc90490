# ISE — common tasks. `make run` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
VENV := .venv/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW_HOME := $(CURDIR)/airflow_home
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install run test lint bench clean-data airflow

install:            ## install system packages and .venv from requirements.lock (idempotent)
	@scripts/install.sh

run: install        ## the whole pipeline on params.yaml: intents → simulate → collect → export, with gates
	$(VENV)/ise run

test: install       ## the whole test suite
	$(VENV)/python -m pytest

lint: install       ## ruff + mypy on ise_core
	$(VENV)/ruff check ise_core tests benchmarks
	$(VENV)/mypy

bench: install      ## every benchmark in benchmarks/, results in benchmarks/results/
	@for script in benchmarks/*.py; do echo "==> $$script"; $(VENV)/python $$script || exit 1; done

clean-data:         ## remove generated data (keeps caches)
	rm -rf data/intents data/trajectories data/sft

# Single-machine Airflow: `airflow standalone` (scheduler, dag-processor, triggerer, api-server,
# LocalExecutor, SQLite) with AIRFLOW_HOME in the project and the UI on 127.0.0.1 only.
AIRFLOW_PORT ?= 8080
AIRFLOW_PASSWORDS := $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated
airflow: export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
airflow: export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
airflow: export AIRFLOW__API__HOST := 127.0.0.1
airflow: export AIRFLOW__API__PORT := $(AIRFLOW_PORT)
airflow: export AIRFLOW__CORE__EXECUTION_API_SERVER_URL := http://127.0.0.1:$(AIRFLOW_PORT)/execution/
airflow: export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS := admin:admin
airflow: install    ## Airflow UI on http://127.0.0.1:$(AIRFLOW_PORT) running dags/ (login printed)
	@set -euo pipefail; mkdir -p "$(AIRFLOW_HOME)"; \
	echo "==> airflow db migrate (log: $(AIRFLOW_HOME)/db-migrate.log)"; \
	$(VENV)/airflow db migrate > "$(AIRFLOW_HOME)/db-migrate.log" 2>&1; \
	read -r pool size < <($(VENV)/python -c 'from ise_core.pipeline import load_settings, resolve_params_path; from pathlib import Path; a = load_settings(resolve_params_path(None, Path.cwd())).airflow; print(a.pool, a.pool_size)'); \
	$(VENV)/airflow pools set "$$pool" "$$size" "LLM-bound ISE tasks" > /dev/null; \
	echo "==> pool $$pool with $$size slots"; \
	test -s "$(AIRFLOW_PASSWORDS)" || (umask 077; $(VENV)/python -c 'import json, secrets, sys; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' > "$(AIRFLOW_PASSWORDS)"); \
	login="admin / $$($(VENV)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$(AIRFLOW_PASSWORDS)")"; \
	banner() { echo; echo "    Airflow UI:  http://127.0.0.1:$(AIRFLOW_PORT)"; echo "    login:       $$login   (from $(AIRFLOW_PASSWORDS))"; echo "    DAG:         ise_refresh   (Ctrl-C stops everything)"; echo; }; \
	banner; \
	( for _ in $$(seq 180); do (exec 3<>/dev/tcp/127.0.0.1/$(AIRFLOW_PORT)) 2>/dev/null && break; sleep 1; done; sleep 2; banner ) & \
	exec $(VENV)/airflow standalone
