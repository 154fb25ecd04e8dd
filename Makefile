# The two commands of the README are `make run` and `make test`; both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Test files run on this many parallel pytest workers (pytest-xdist, one file per worker at a
# time: a module's shared server stays in one process). Most of a test's time is waiting on
# servers and clients, so more workers than cores pay; 0 runs everything in one process.
PYTEST_WORKERS ?= 3

.PHONY: run test check unit integration lint typecheck clean xeps fuzz

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/imactor supervise --config conf/imactor.toml

# The storage tests also run on a throw-away PostgreSQL server (tests/support/postgres.py):
# scripts/ensure-postgres.sh installs its programs on a machine without them.
test: $(BIN)/.installed
	$(BIN)/ruff check imactor supervisors tests bench
	$(BIN)/mypy
	sh scripts/ensure-postgres.sh
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

check: $(BIN)/.installed
	$(BIN)/ruff check imactor supervisors tests bench
	$(BIN)/mypy
	$(BIN)/pytest tests/unit

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

integration: $(BIN)/.installed
	$(BIN)/pytest tests/integration

# The README's table of supported standards, from the modules' metadata (imactor/xep_table.py).
xeps: $(BIN)/.installed
	$(BIN)/python -m imactor.xep_table

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Coverage-guided fuzzing (atheris): every target for FUZZ_SECONDS each, one after the other on
# one core; a crash stops its target and leaves the input in fuzz-work/TARGET/crashes/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= xml_parser stream sasl jid data_forms bosh http mesh socks5 component s2s_inbound
fuzz: $(BIN)/.installed
	@status=0; for target in $(FUZZ_TARGETS); do \
		$(BIN)/python -m tests.fuzz $$target --seconds $(FUZZ_SECONDS) || status=1; \
	done; exit $$status
