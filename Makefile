# Yiwang — one command runs the system (`make run`), one passes its tests (`make test`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.lock | cut -c1-12)
# The Go the infra scripts use (YIWANG_GO, PATH or /usr/local/go; checked against go.mod's version).
GO ?= $(shell bash -c '. infra/env.sh && yw_find_go')
YIWANG_AMQP_PORT ?= 5672
YIWANG_RABBIT_MGMT_PORT ?= 15672
# hypothesis loads plugins of installed packages when first imported (by schemathesis's pytest plugin, before
# any conftest); trio's (a Selenium dependency) cannot be imported under eventlet, which `nameko test` applies.
NAMEKO_TEST := HYPOTHESIS_NO_PLUGINS=1 $(BIN)/nameko test --amqp-uri amqp://guest:guest@127.0.0.1:$(YIWANG_AMQP_PORT)/ \
	--rabbit-api-uri http://guest:guest@127.0.0.1:$(YIWANG_RABBIT_MGMT_PORT)

.PHONY: help venv provision run stop seed bench-answers bench-cases bench-tracing bench bench-sustain bench-cpu loadtest deadletters test test-go test-unit test-integration test-e2e test-faults audit-deps lint format schemas lock infra-stop up down logs test-docker

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.lock
	@test -x $(BIN)/pip || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP) ## Create .venv with the locked dependencies

provision: ## Install (if missing) and start RabbitMQ and the document server
	@bash infra/provision.sh

run: provision venv ## Start everything; serve the API on http://127.0.0.1:8000 until Ctrl-C
	$(BIN)/python -m infra.system run

stop: ## Stop a system started in the background with `make run &`
	-$(BIN)/python -m infra.system stop

infra-stop: ## Stop RabbitMQ and the document server
	@bash infra/stop.sh

seed: venv ## Create the first admin and the starter catalog in a running system (also done on first start)
	$(BIN)/python -m infra.seed

test: provision venv test-go ## All tiers: unit, integration, end to end, faults under load
	$(NAMEKO_TEST) contracts services gateway tests

test-go: ## Unit tests of the document server's Go wrapper
	cd infra/docserver && $(GO) test ./...

test-unit: venv ## Unit tests only (no broker, no database)
	$(NAMEKO_TEST) -m "not integration and not e2e and not faults" contracts services gateway tests

test-integration: venv provision ## Integration tests (real RabbitMQ and document server)
	$(NAMEKO_TEST) -m integration contracts services gateway tests

test-e2e: venv provision ## End-to-end tests over HTTP against the whole system
	$(NAMEKO_TEST) -m e2e tests

test-faults: venv provision ## Broker, processes and store broken under load (own RabbitMQ node, Toxiproxy); figures at the end
	$(NAMEKO_TEST) -m faults tests/faults

test-docker: venv ## The end-to-end tests against the docker-compose stack (skipped when no Docker engine answers)
	@if ! docker info >/dev/null 2>&1; then \
		echo "test-docker: skipped: no Docker engine answers 'docker info' (make test-e2e runs the same tests locally)"; \
		exit 0; \
	fi; \
	YIWANG_E2E_MODE=docker $(NAMEKO_TEST) -m e2e tests/e2e

# The first admin's password: YIWANG_ADMIN_PASSWORD, or the one generated once into the state directory.
ADMIN_PASSWORD = $${YIWANG_ADMIN_PASSWORD:-$$($(PYTHON) services/identity/first_admin.py)}
# The key of texted codes (every identity container must hold the same): likewise.
CODE_SECRET = $${YIWANG_CODE_SECRET:-$$($(PYTHON) services/identity/code_secret.py)}

up: ## Build the image and start the whole system in containers (API on http://localhost:8000); needs Docker
	YIWANG_ADMIN_PASSWORD="$(ADMIN_PASSWORD)" YIWANG_CODE_SECRET="$(CODE_SECRET)" docker compose up -d --build --wait
	@echo "first admin: admin / the password printed by: $(PYTHON) services/identity/first_admin.py"

down: ## Stop and remove the containers (data volumes are kept; docker compose down -v drops them)
	YIWANG_ADMIN_PASSWORD=unused YIWANG_CODE_SECRET=unused docker compose down

logs: ## Follow the containers' logs
	YIWANG_ADMIN_PASSWORD=unused YIWANG_CODE_SECRET=unused docker compose logs -f --tail=200

audit-deps: ## Known vulnerabilities in requirements.lock (pip-audit; says so when its service is unreachable)
	@bash infra/audit_deps.sh

lint: venv ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: venv ## Re-export the event JSON Schemas to contracts/schemas/
	$(BIN)/python -m contracts.export_schemas

bench-answers: venv ## Accuracy of catalog answers on the benchmark questions (top-1, top-3)
	$(BIN)/python -m services.catalog.benchmark.answers_accuracy

bench-cases: venv provision ## p50/p95 of my-cases, case-by-number and task-list reads with 1,000,000 cases (CASES=...)
	$(BIN)/python -m loadtests.bench_case_reads --cases $(or $(CASES),1000000)

bench-tracing: venv provision ## Case throughput with tracing on and off in one run, and their ratio (DURATION= seconds per mode, CLIENTS=)
	$(BIN)/python -m loadtests.bench_tracing --seconds $(or $(DURATION),30) --clients $(or $(CLIENTS),16)

bench: venv provision ## The machine's ceiling (broker, document server), the case path's throughput, and its share
	$(BIN)/python -m loadtests.bench_ceiling --seconds $(or $(DURATION),20)

bench-sustain: venv provision ## The case path at RATE cases/s for DURATION seconds [600] from CLIENTS applicants [200], judged by every SLO (exit 1 on a miss)
	$(BIN)/python -m loadtests.bench_ceiling --sustain $(or $(RATE),8) --seconds $(or $(DURATION),600) --clients $(or $(CLIENTS),200)

bench-cpu: venv provision ## CPU per case of each process (closed loop) for a system started with the environment's settings
	$(BIN)/python -m loadtests.bench_cpu

loadtest: venv provision ## Locust suite headless: SHAPE=peak|soak|spike|none USERS= DURATION= HOST= (results in loadtests/results/)
	$(BIN)/python -m loadtests.run --shape $(or $(SHAPE),peak) --users $(or $(USERS),30) --duration $(or $(DURATION),180) $(if $(HOST),--host $(HOST))

deadletters: venv ## List dead letters with their errors (replay: python -m infra.deadletters replay dlq.<queue>)
	$(BIN)/python -m infra.deadletters list

UV_VERSION := 0.13.8
lock: venv ## Re-pin requirements.lock from requirements.in
	@$(BIN)/uv --version 2>/dev/null | grep -q ' $(UV_VERSION)' || $(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile --quiet requirements.in -o requirements.lock --python-version 3.11
