# The two commands of README: `make run` (the hub on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test unit install bench clean check-schemas

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when pyproject.toml changes; the stamp keeps `make run` fast otherwise.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## make run: local Kafka + registry, a worker, a demo producer and subscriber; Ctrl-C stops them.
run: install
	$(BIN)/eduhub run

## make test: the whole suite; starts the real broker and registry it needs, stops them after.
# pytest exits 5 when it collected no test: that is a failure here, never a green run.
test: install check-schemas
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

## make check-schemas: every schema must read data written with each of its committed versions.
check-schemas: install
	$(BIN)/eduhub schemas check --no-registry

## make unit: the fast tests only (no broker, no registry).
unit: install
	$(BIN)/python -m pytest -q tests/unit; rc=$$?; [ $$rc -ne 5 ] && exit $$rc || exit 1

bench: install
	$(BIN)/eduhub bench stage

clean:
	rm -rf $(VENV) .eduhub .pytest_cache
