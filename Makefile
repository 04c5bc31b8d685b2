# pai: `make up` starts the whole platform on this machine; `make test` runs every check.
# Both set themselves up on a fresh machine: a .venv from requirements.lock, the buf CLI from npm,
# and the generated protos.

PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
BUF     := node_modules/.bin/buf
PACKAGES := libs/pai-protos libs/pai-common libs/pai-runtime services/auth services/scheduler services/dlc services/lineage gateway cli deploy/local
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: all install gen up test lint format buf-check pytest clean

all: gen

$(VENV)/.installed: requirements.lock $(PYPROJECTS)
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES))
	touch $@

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(BUF)

gen: $(VENV)/.installed
	$(PY) tools/gen_protos.py

up: install gen
	$(PY) -m pai_local up

TYPED := $(wildcard libs/pai-common/src libs/pai-runtime/src services/auth/src services/scheduler/src services/dlc/src services/lineage/src gateway/src deploy/local/src cli/src)

lint: install gen
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(TYPED)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) tools/check_sizes.py
	$(MAKE) --no-print-directory buf-check

# buf format and lint, and the breaking-change check against the previous commit
# (skipped only when there is no previous commit with protos).
buf-check: $(BUF)
	$(BUF) format --diff --exit-code
	$(BUF) lint
	@if git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		echo "buf breaking against HEAD~1"; \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: skipped (no previous commit with protos)"; fi

pytest: install gen
	$(PY) -m pytest

test: lint pytest

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(BUF) format -w

clean:
	rm -rf $(VENV) node_modules libs/pai-protos/src/pai libs/pai-protos/src/buf libs/pai-protos/src/.gen-stamp
