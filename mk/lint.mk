# Gates: lint (ruff + import rules) and types (mypy), configured in pyproject.toml; .ci/run runs
# both before the tests, .pre-commit-config.yaml on every commit.
.PHONY: lint typecheck format version

RUFF ?= .venv/bin/ruff

lint: install ## ruff check, ruff format --check, the import rules (lint-imports: core imports no program, programs no other program nor the CLI) and make version
	@status=0; \
	$(RUFF) check . || status=1; \
	$(RUFF) format --check --output-format concise . || status=1; \
	$(PY) tools/gates.py imports || status=1; \
	$(PY) tools/version.py >/dev/null || status=1; \
	exit $$status

typecheck: install ## mypy over the whole streamtrain package (programs included) and the tests
	$(PY) tools/gates.py typecheck

format: ## Rewrite the code the way `make lint` wants it: imports sorted, then ruff format
	$(RUFF) check --select I --fix .
	$(RUFF) format .

version: ## Print the release version (streamtrain/__init__.py) and check every file carrying it agrees (python tools/version.py set X.Y.Z to change it)
	$(PY) tools/version.py
