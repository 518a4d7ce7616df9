# snapbot: `make run` starts it, `make test` runs everything CI runs.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
GUEST_DIR ?= .build/guest

# What libvirt-python needs to build, and what the bot needs to run.
BUILD_PACKAGES := gcc pkg-config libvirt-dev python3-dev python3-venv qemu-utils
# What the system tests need: a real libvirtd with QEMU, and the tools to build the guest. Not
# libvirt-daemon-system: the tests run their own daemon (tests/system/host/start-libvirtd.sh).
TEST_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 busybox-static cpio xz-utils zstd postgresql

.PHONY: run console test lint typecheck unit system bench deps test-deps clean

deps:
	@bash scripts/ensure-packages.sh $(BUILD_PACKAGES)

test-deps: deps
	@bash scripts/ensure-packages.sh $(TEST_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

run: deps $(VENV)/.installed
	$(VENV)/bin/snapbot run

console: deps $(VENV)/.installed
	$(VENV)/bin/snapbot console

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit tests/contract

system: test-deps $(VENV)/.installed
	bash tests/system/host/start-libvirtd.sh
	bash tests/system/host/start-postgres.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	SNAPBOT_GUEST_DIR=$(abspath $(GUEST_DIR)) SNAPBOT_TEST_POSTGRES_URL=postgres://snapbot@127.0.0.1:55432/snapbot $(VENV)/bin/pytest tests/system

test: test-deps $(VENV)/.installed lint typecheck
	bash tests/system/host/start-libvirtd.sh
	bash tests/system/host/start-postgres.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	SNAPBOT_GUEST_DIR=$(abspath $(GUEST_DIR)) SNAPBOT_TEST_POSTGRES_URL=postgres://snapbot@127.0.0.1:55432/snapbot $(VENV)/bin/pytest -m "not reliability"

# Figures, not pass/fail: snapbot against raw virsh, event-loop lag, Slack ack latency.
bench: test-deps $(VENV)/.installed
	bash tests/system/host/start-libvirtd.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	$(VENV)/bin/python bench/snapshot_latency.py $(GUEST_DIR)

clean:
	rm -rf $(VENV) .build .mypy_cache .ruff_cache .pytest_cache
