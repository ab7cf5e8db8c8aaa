# Set-up and the two README commands. Everything installs into a local virtual
# environment (.venv), so a fresh machine needs only Python 3.11 and pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/demo

.PHONY: demo test test-slow install bench clean

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job end to end on the embedded default (synthetic data, tiny config).
demo: $(STAMP)
	$(BIN)/vreloc pipeline run --workdir $(WORKDIR)

# The test suite (slow full-size checks are excluded; `make test-slow` runs them).
test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/vreloc bench --quick

clean:
	rm -rf $(VENV) runs build *.egg-info
