# ISE — common tasks. `make run` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
VENV := .venv/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW_HOME := $(CURDIR)/airflow_home
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install run test lint bench soak clean-data airflow airflow-celery llama-server model-server run-local

install:            ## install system packages and .venv from requirements.lock (idempotent)
	@scripts/install.sh

run: install        ## the whole pipeline on params.yaml: intents → simulate → collect → export, with gates
	$(VENV)/ise run

test: install llama-server       ## the whole test suite
	$(VENV)/python -m pytest

lint: install       ## ruff + mypy on ise_core
	$(VENV)/ruff check ise_core tests benchmarks
	$(VENV)/mypy

# Stage 1 at scale samples this many intents (the published run's size). On 2 shared cores the
# whole target took ~18 min, 11 of them stage 1; `make bench BENCH_INTENTS=5000` shortens its
# write-out and de-duplication (its embedding subsets keep their size). See docs/performance.md.
BENCH_INTENTS ?= 50000
bench: install      ## every benchmark in benchmarks/, then benchmarks/results/SUMMARY.md
	@$(VENV)/python benchmarks/report.py --begin; failed=0; \
	for script in benchmarks/[!_]*.py; do \
		[ "$$script" = benchmarks/report.py ] && continue; \
		args=(); [ "$$script" = benchmarks/intents_scale.py ] && args=(--count $(BENCH_INTENTS)); \
		echo "==> $$script $${args[*]}"; started=$$SECONDS; \
		$(VENV)/python "$$script" "$${args[@]}"; code=$$?; \
		$(VENV)/python benchmarks/report.py --record "$$script" $$code $$((SECONDS - started)); \
		[ $$code -eq 0 ] || { echo "==> $$script exited $$code"; failed=1; }; \
	done; \
	$(VENV)/python benchmarks/report.py; exit $$failed

soak: install       ## 500 episodes at concurrency 16: fds, processes, memory, pace (CI runs 80)
	$(VENV)/python -m tests.reliability.soak --episodes 500 --concurrency 16 --batch-size 50 \
		--baseline 50 --out benchmarks/results/soak.json

# A real model on this machine: llama.cpp's llama-server (built once from source into
# .cache/llama-server/, ~5 min on 2 idle cores) serving the bundled SmolLM2-135M-Instruct on
# 127.0.0.1:$(MODEL_PORT). See README, "A real model on this machine".
MODEL_PORT ?= 8081
llama-server:       ## build llama.cpp's llama-server once (cached in .cache/llama-server/)
	@scripts/llama_server.sh build

model-server: install llama-server  ## serve the bundled model on http://127.0.0.1:$(MODEL_PORT)/v1 (Ctrl-C stops it)
	$(VENV)/python -m ise_core.llm.local_server --port $(MODEL_PORT)

run-local: install llama-server  ## the whole pipeline on the local model server (params.local.yaml)
	$(VENV)/python -m ise_core.llm.local_server --port 8081 -- $(VENV)/ise run --params params.local.yaml

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
	read -r pool size < <($(VENV)/python -c 'from ise_core.pipeline import concurrency_plan, load_settings, resolve_params_path; from pathlib import Path; s = load_settings(resolve_params_path(None, Path.cwd())); print(s.airflow.pool, concurrency_plan(s).pool_slots)'); \
	$(VENV)/airflow pools set "$$pool" "$$size" "LLM-bound ISE tasks" > /dev/null; \
	echo "==> pool $$pool with $$size slots"; \
	test -s "$(AIRFLOW_PASSWORDS)" || (umask 077; $(VENV)/python -c 'import json, secrets, sys; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' > "$(AIRFLOW_PASSWORDS)"); \
	login="admin / $$($(VENV)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$(AIRFLOW_PASSWORDS)")"; \
	banner() { echo; echo "    Airflow UI:  http://127.0.0.1:$(AIRFLOW_PORT)"; echo "    login:       $$login   (from $(AIRFLOW_PASSWORDS))"; echo "    DAG:         ise_refresh   (Ctrl-C stops everything)"; echo; }; \
	banner; \
	( for _ in $$(seq 180); do (exec 3<>/dev/tcp/127.0.0.1/$(AIRFLOW_PORT)) 2>/dev/null && break; sleep 1; done; sleep 2; banner ) & \
	exec $(VENV)/airflow standalone

# Several workers on one machine: Postgres, Redis, api-server, scheduler, dag-processor,
# triggerer and Celery workers (CeleryExecutor) on 127.0.0.1, from Debian's postgresql and
# redis-server; state in airflow_home/celery. The tests start the same script.
CELERY_WORKERS ?= 2
CELERY_CONCURRENCY ?= 2
airflow-celery: install  ## CeleryExecutor with $(CELERY_WORKERS) workers; UI on 127.0.0.1:$(AIRFLOW_PORT)
	$(VENV)/python scripts/airflow_celery.py --workers $(CELERY_WORKERS) \
		--concurrency $(CELERY_CONCURRENCY) --port $(AIRFLOW_PORT)
