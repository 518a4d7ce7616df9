# snapbot: `make run` starts it, `make test` runs everything CI runs.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
GUEST_DIR ?= .build/guest

# What libvirt-python needs to build, and what the bot needs to run.
# python3-libnbd: the NBD client reading and writing disks for the backup store (not on PyPI;
# scripts/link-libnbd.sh links it into the venv); qemu-utils: qemu-img, qemu-nbd.
BUILD_PACKAGES := gcc pkg-config libvirt-dev python3-dev python3-venv qemu-utils python3-libnbd
# What the system tests need: a real libvirtd with QEMU, and the tools to build the guest. Not
# libvirt-daemon-system: each test run starts (and at its end removes) a libvirtd of its own
# (tests/system/daemon.py), and never touches the machine's. openssh-server: the sshd binary for
# the second host the multi-host tests reach over qemu+ssh (tests/system/remote_host.py starts
# a private one on a loopback port, with its own config).
TEST_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 busybox-static cpio xz-utils zstd postgresql systemd openssh-server

.PHONY: run console test reliability lint typecheck unit system bench bench-smoke deps test-deps clean

deps:
	@bash scripts/ensure-packages.sh $(BUILD_PACKAGES)

test-deps: deps
	@bash scripts/ensure-packages.sh $(TEST_PACKAGES)

$(VENV)/.installed: pyproject.toml scripts/link-libnbd.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	bash scripts/link-libnbd.sh $(VENV)/bin/python
	touch $@

run: deps $(VENV)/.installed
	$(VENV)/bin/snapbot run

console: deps $(VENV)/.installed
	$(VENV)/bin/snapbot console

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit tests/contract

system: test-deps $(VENV)/.installed
	bash tests/system/host/start-postgres.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	SNAPBOT_GUEST_DIR=$(abspath $(GUEST_DIR)) SNAPBOT_TEST_POSTGRES_URL=postgres://snapbot@127.0.0.1:55432/snapbot $(VENV)/bin/pytest tests/system

test: test-deps $(VENV)/.installed lint typecheck
	bash tests/system/host/start-postgres.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	SNAPBOT_GUEST_DIR=$(abspath $(GUEST_DIR)) SNAPBOT_TEST_POSTGRES_URL=postgres://snapbot@127.0.0.1:55432/snapbot $(VENV)/bin/pytest -m "not reliability" --durations=15

# The fault, race, fuzz and security suites in full (the long runs `make test` leaves out) and
# every other test that reports a figure, then one table: printed, and written to
# docs/reliability.md (linked from the README). Fails if a test or a check failed, or a check
# the sources name recorded nothing.
RELIABILITY_LOG ?= .build/reliability.jsonl
RELIABILITY_SUITES = $(wildcard tests/reliability tests/security tests/fuzz tests/system/test_faults_real_guest.py \
	tests/system/test_bot_killed.py tests/system/test_backup_recovery_real_guest.py \
	tests/system/test_console_process.py tests/system/test_scheduler_replicas.py)
RELIABILITY_TESTS = $(RELIABILITY_SUITES) $(filter-out $(addsuffix /%,$(RELIABILITY_SUITES)) $(RELIABILITY_SUITES), \
	$(shell grep -rl --include='test_*.py' 'reliability.figures' tests))

reliability: test-deps $(VENV)/.installed
	bash tests/system/host/start-postgres.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	mkdir -p $(dir $(RELIABILITY_LOG)) && rm -f $(RELIABILITY_LOG)
	started=$$(date +%s); \
	SNAPBOT_RELIABILITY_LOG=$(abspath $(RELIABILITY_LOG)) SNAPBOT_GUEST_DIR=$(abspath $(GUEST_DIR)) SNAPBOT_TEST_POSTGRES_URL=postgres://snapbot@127.0.0.1:55432/snapbot \
		$(VENV)/bin/pytest -m "reliability or not reliability" $(RELIABILITY_TESTS); \
	status=$$?; \
	$(VENV)/bin/python scripts/reliability_table.py $(RELIABILITY_LOG) --write docs/reliability.md \
		--pytest-status $$status --seconds $$(( $$(date +%s) - started ))

# Figures, not pass/fail (bench/README.md): every benchmark in full, recorded with the machine and
# the command in bench/results/<name>.json, and the table in bench/README.md regenerated. Run it
# on a quiet machine: the load average is recorded with the figures. BENCH_ARGS="--only fleet".
BENCH_ENV = SNAPBOT_GUEST_DIR=$(abspath $(GUEST_DIR)) SNAPBOT_TEST_POSTGRES_URL=postgres://snapbot@127.0.0.1:55432/snapbot
bench: test-deps $(VENV)/.installed
	bash tests/system/host/start-postgres.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	$(BENCH_ENV) $(VENV)/bin/python -m bench $(BENCH_ARGS)

# A short run of each benchmark (tests/system/test_bench_smoke.py runs it in `make test`): that
# it runs and records, never how fast; results go to .build/bench-smoke, not bench/results.
bench-smoke: test-deps $(VENV)/.installed
	bash tests/system/host/start-postgres.sh
	bash tests/system/guest/build.sh $(GUEST_DIR)
	$(BENCH_ENV) $(VENV)/bin/python -m bench --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .build .mypy_cache .ruff_cache .pytest_cache
