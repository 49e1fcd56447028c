# toex developer entry points. `make help` lists them.
SHELL := /bin/bash
UV ?= uv
# Every member is installed by `make install` (uv sync --all-packages); runs never re-sync.
RUN := $(UV) run --frozen --no-sync

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n", $$1, $$2}'

# Stamped, so the targets that run workspace commands install first on a fresh clone and
# cost nothing afterwards (until uv.lock or a pyproject changes).
INSTALLED := .venv/.toex-installed
$(INSTALLED): uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml)
	$(UV) sync --all-packages --frozen --compile-bytecode
	@touch $@

.PHONY: install
install: ## Install every workspace member and the dev tools into .venv
	$(UV) sync --all-packages --frozen --compile-bytecode
	@touch $(INSTALLED)

.PHONY: lock
lock: ## Re-resolve dependencies into uv.lock
	$(UV) lock

.PHONY: up
up: $(INSTALLED) ## Start NATS, PostgreSQL, Keycloak and the services on loopback; load demo data (installs first on a fresh clone)
	$(RUN) toex-devstack up

.PHONY: up-federation
up-federation: $(INSTALLED) ## Start a national hub and two regions (EMSOU, LONDON) on loopback: three NATS leaf-joined, one PostgreSQL, one Keycloak
	$(RUN) toex-devstack up-federation $(if $(KEYCLOAK_URL),--keycloak-url $(KEYCLOAK_URL))

.PHONY: down
down: $(INSTALLED) ## Stop everything `make up` or `make up-federation` started
	$(RUN) toex-devstack down

.PHONY: status
status: $(INSTALLED) ## Show what the local stack (or the local federation) is running
	$(RUN) toex-devstack status

.PHONY: protos
protos: ## Regenerate the Python stubs in libs/contracts from protos/ (ONLY=toex/comms for one package)
	$(RUN) python tools/gen_protos.py $(if $(ONLY),--only $(ONLY))

.PHONY: check-protos
check-protos: ## Fail if libs/contracts is stale against protos/
	$(RUN) python tools/gen_protos.py --check

.PHONY: buf
buf: ## buf lint and buf breaking against main
	cd protos && $(RUN) buf lint
	$(RUN) python tools/buf_breaking.py

.PHONY: fmt
fmt: ## Format the code
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

.PHONY: lint
lint: ## Format check, lint, the import contracts (a domain imports no infrastructure), repeated code
	$(RUN) ruff format --check .
	$(RUN) ruff check .
	$(RUN) lint-imports
	$(RUN) pylint $(wildcard services/*/src/toex_* libs/*/src/toex_* tools/*/src/toex_*)

.PHONY: typecheck
typecheck: ## mypy over libs, services and tools
	$(RUN) mypy libs/kernel/src libs/common/src libs/cli/src libs/products/src services/*/src tools/*/src

.PHONY: test-unit
test-unit: ## Unit tests (fakes only)
	$(RUN) pytest -q -m "not integration and not e2e" libs services tools

.PHONY: test-integration
test-integration: ## Integration tests against real PostgreSQL, nats-server and Keycloak
	$(RUN) pytest -q -m integration libs services tools

.PHONY: test-e2e
test-e2e: ## End-to-end tests against the stack as users run it
	$(RUN) pytest -q tests/e2e

.PHONY: test-federation
test-federation: ## The federation tier: a hub and two region installations, as `make up-federation` runs them
	$(RUN) pytest -q tests/federation

.PHONY: test-security
test-security: ## The security tier: each finding of the security review as an attack against real servers
	$(RUN) pytest -q tests/security

.PHONY: check-deploy
check-deploy: ## helm lint/template for every region and the hub, Kubernetes and compose schemas, NATS configs, Dockerfiles
	$(RUN) toex-deploycheck

.PHONY: test
test: install lint typecheck check-protos buf check-deploy ## Everything CI runs: checks and all test tiers
	$(RUN) pytest -q -p no:cacheprovider libs services tools tests

.PHONY: bench
bench: ## Run the benchmarks (not part of `make test`); results go to bench/RESULTS.md
	$(RUN) python -m bench
