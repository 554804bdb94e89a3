# Gates: lint (ruff + import rules) and types (mypy), configured in pyproject.toml; .ci/run runs
# both before the tests, .pre-commit-config.yaml on every commit.
.PHONY: lint typecheck format

RUFF ?= .venv/bin/ruff

lint: install ## ruff check, ruff format --check and the import rules (lint-imports: core imports no program, programs import no other program and not the CLI)
	@status=0; \
	$(RUFF) check . || status=1; \
	$(RUFF) format --check --output-format concise . || status=1; \
	$(PY) tools/gates.py imports || status=1; \
	exit $$status

typecheck: install ## mypy over the whole streamtrain package (programs included) and the tests
	$(PY) tools/gates.py typecheck

format: ## Rewrite the code the way `make lint` wants it: imports sorted, then ruff format
	$(RUFF) check --select I --fix .
	$(RUFF) format .
