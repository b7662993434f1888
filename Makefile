# Every target creates .venv on first use, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers, one test file each at a time: most tests wait on servers, browsers and
# subprocesses (and on a maintenance window's next minute), so four share two cores well: 11 min
# 46 s against 14 min 42 s with three on the same machine (2026-12-07). Each worker has its own
# MariaDB database, Prefect test server and ports (tests/conftest.py). `make test
# TEST_WORKERS=0` runs in one process. The run ends with its 15 slowest tests: where the suite's
# time goes, run by run.
TEST_WORKERS ?= 4

.PHONY: demo demo-serve test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/patchflow demo

# The demo, then its console and Prefect UI on loopback until Ctrl+C (the URLs and a generated
# console password are printed).
demo-serve: $(STAMP)
	$(BIN)/patchflow demo --serve

test: $(STAMP)
	@command -v cabextract >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq cabextract >/dev/null; } || echo "note: cabextract is not installed (needs root): the wsusscn2.cab tests skip"
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "note: chromium is not installed (needs root): the browser tests skip"
	@test -x /usr/sbin/sshd || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq openssh-server >/dev/null; } || echo "note: openssh-server is not installed (needs root): the shared-storage (sftp) tests skip"
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .patchflow .pytest_cache
