# The two commands of README: `make run` (the hub on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-faults unit install bench clean check-schemas

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when pyproject.toml changes; the stamp keeps `make run` fast otherwise.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
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

## make test-faults: the fault scenarios only (tests/faults, marker `faults`) and their table;
## EVENTS=100000 streams that many events per scenario (default 20 000, EDUHUB_FAULT_EVENTS).
test-faults: install
	$(if $(EVENTS),EDUHUB_FAULT_EVENTS=$(EVENTS) )$(BIN)/python -m pytest -q -m faults tests/faults; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-faults: pytest collected no tests" >&2; exit 1; fi; exit $$rc

## make check-schemas: every schema must read data written with each of its committed versions.
check-schemas: install
	$(BIN)/eduhub schemas check --no-registry

## make unit: the fast tests only (no broker, no registry).
unit: install
	$(BIN)/python -m pytest -q tests/unit; rc=$$?; [ $$rc -ne 5 ] && exit $$rc || exit 1

bench: install
	$(BIN)/eduhub bench all

clean:
	rm -rf $(VENV) .eduhub .pytest_cache
