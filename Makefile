# Everyday commands; `make help` lists them.
PY := .venv/bin/python
.DEFAULT_GOAL := help

.PHONY: help env env-dev demo test test-unit test-integration lint format keys compose-check clean bench-encrypt bench-api bench-quality bench bench-compare engine-test lock kind-up kind-down helm-lint helm-template

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

env: ## The runtime only: system packages when missing (as root) and .venv with the runtime packages (Python 3.11+)
	@scripts/bootstrap.sh

env-dev: ## The runtime and the test tools and linters (the dev extra) in .venv; no browser, no apt extras
	@scripts/bootstrap.sh --dev

demo: env ## Run the whole system locally and perform one run (ONCE=1 stops after the summary; BAD_EVERY=0 no broken users)
	@$(PY) scripts/demo.py $(if $(ONCE),--once,) $(if $(BAD_EVERY),--bad-every $(BAD_EVERY),)

test: ## All tests on real Redis, SFTP and SQLite (adds the test tools; as root Chromium, Prometheus, age)
	@scripts/bootstrap.sh --test
	@$(PY) -m pytest

test-unit: env-dev ## Only the pure-logic tests
	@$(PY) -m pytest tests/unit

lint: env-dev ## ruff and mypy
	@$(PY) -m ruff check services scripts tests testbed
	@$(PY) -m ruff format --check services scripts tests testbed
	@$(PY) -m mypy services testbed

lock: env-dev ## Pin every dependency of pyproject.toml (runtime and dev) in requirements.lock (pip-compile)
	@.venv/bin/pip-compile --quiet

format: env-dev ## Format the code
	@$(PY) -m ruff format services scripts tests testbed
	@$(PY) -m ruff check --fix services scripts tests testbed

bench-encrypt: env ## Benchmark: peak memory of the saver's age encryption on 1 GB (SIZE_MB=...)
	@$(PY) scripts/bench_encrypt.py --size-mb $(or $(SIZE_MB),1024)

bench: env ## Benchmark: end-to-end users/s, CPU/user, peak RSS (BENCH_SIZES=10000,100000 BENCH_DATABASE=sqlite|postgresql BENCH_SAVERS=1 ...)
	@$(PY) scripts/bench.py

.PHONY: bench-check
bench-check: env ## CI guard (under a minute): 20,000 users; fails when CPU per user or a peak RSS is over scripts/bench_budget.toml
	@$(PY) scripts/bench_check.py

.PHONY: bench-check-regressed
bench-check-regressed: env ## The guard shown failing: bench-check on d1dbdb4's PII walk put back (scripts/bench_regression.patch; 1-3 min)
	@git apply scripts/bench_regression.patch
	@# The patch comes off whatever happens (an interrupt too); a crash is not a verdict, so the verdict line is required.
	@trap 'git apply -R scripts/bench_regression.patch' EXIT; trap 'exit 130' INT TERM; \
	 out=$$(mktemp); $(PY) scripts/bench_check.py | tee $$out; \
	 if grep -q '^bench-check FAILED' $$out && grep -q '^  extractor: CPU' $$out && grep -q '^  transformer: CPU' $$out; \
	 then rm -f $$out; echo "bench-check-regressed: the guard failed the regressed code, naming the extractor and the transformer"; \
	 else rm -f $$out; echo "bench-check-regressed: the guard did NOT fail the regressed code on the extractor and the transformer"; exit 1; fi

bench-compare: env ## Benchmark: this pipeline vs dlt on the same source, alternating (BENCH_COMPARE_SIZES, BENCH_COMPARE_REPEAT)
	@$(PY) scripts/bench_compare.py

bench-api: env ## Benchmark: API req/s and p50/p99 on a 100,000-user database, 1 and 2 workers, wrk (USERS=...)
	@$(PY) scripts/bench_api.py --users $(or $(USERS),100000)

bench-quality: env ## Benchmark: quality report and CSV/Parquet export time and peak RSS at 100,000 users (USERS=...)
	@$(PY) scripts/bench_quality.py --users $(or $(USERS),100000)

keys: env ## Generate the SFTP client key, host keys and known_hosts for compose (ssh_keys/), and its data folders
	@scripts/gen-keys.sh ssh_keys sftp 22
	@# Made here, owned by you (HOST_UID in .env), so Docker does not create them as root.
	@mkdir -p database data sftp_data

compose-check: env-dev ## Lint the Dockerfile, validate docker-compose.yml, run it as local processes
	@$(PY) -m pytest -q tests/compose

engine-test: env-dev ## Compose and the chart's pods on a private Docker engine (root): build, up, a run, checks, cleanup
	@ETL_ENGINE_REQUIRED=1 $(PY) -m pytest -q tests/engine
	@cat .run/engine/summary.txt

# The demo holds .run/demo.lock (flock) for its life: clean is refused while it is held, and holds it while it removes.
demo_pid = $(shell [ -e .run/demo.lock ] && ! flock -n .run/demo.lock true && (cat .run/demo.lock; echo ' '))
clean: ## Remove local data of the demo (refused while a demo runs in this checkout)
	$(if $(demo_pid),$(error make clean refused: a demo is running in this checkout (pid $(strip $(demo_pid))); stop it with Ctrl-C in its terminal or kill $(strip $(demo_pid)) then run make clean again))
	@mkdir -p .run && flock -n .run/demo.lock rm -rf database sftp_data data .run \
	  || { echo "make clean refused: a demo started meanwhile (pid $$(cat .run/demo.lock)); stop it first" >&2; exit 1; }
	@echo "removed database/, data/, sftp_data/ and .run/"

kind-up: env-dev ## Kubernetes on kind: cluster, images, ingress-nginx, keys, helm install + test, API URL
	@PY=$(PY) scripts/kind.sh up

kind-down: ## Delete the kind cluster (and everything in it)
	@scripts/kind.sh down

helm-lint: env-dev ## Lint charts/etl (Helm's engine, strict) with the default and every ci/*-values.yaml
	@$(PY) -m testbed.chart lint
	@$(PY) -m testbed.chart lint $(foreach f,$(wildcard charts/etl/ci/*-values.yaml),-f $(f))

helm-template: env-dev ## Render charts/etl to stdout (VALUES=charts/etl/ci/kind-values.yaml to pick values)
	@$(PY) -m testbed.chart template $(if $(VALUES),-f $(VALUES),)

# Day two: the chart's README and the operators' command line (docs/operations.md).
.PHONY: chart-readme check runs run-now dead-letters retention-plan

chart-readme: env-dev ## Write charts/etl/README.md from values.schema.json and values.yaml (helm-docs style)
	@$(PY) -m testbed.chartdocs

ETL := .venv/bin/etl
# Against `make demo`'s API, its generated token (.run/api_token) unless ETL_API_TOKEN is set.
check runs run-now dead-letters retention-plan: export ETL_API_TOKEN ?= $(shell cat .run/api_token 2>/dev/null)

check: env ## Can this machine reach Redis, the source, SFTP, the database and the API (etl check; .env settings)
	@$(ETL) check

runs: env ## The latest runs through the API (etl runs list; ETL_API_URL, ETL_API_TOKEN)
	@$(ETL) runs list

run-now: env ## Start a run through the API and follow it to its end (etl runs start --follow)
	@$(ETL) runs start --follow

dead-letters: env ## Dead letters with their reasons (etl dead-letters list)
	@$(ETL) dead-letters list

retention-plan: env ## What retention would remove now, measured by the saver (etl retention plan; operator token)
	@$(ETL) retention plan
