# Developer entry points: install, lint, test, demo, demo-stop, bench.
# Debian 12: system packages come from apt (we run as root), Python ones go to .venv.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PG_BIN      := /usr/lib/postgresql/15/bin
VENV        := .venv
BIN         := $(VENV)/bin
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q

.PHONY: install lint test demo demo-stop bench bench-pgbench bench-tools conformance fuzz image

install: $(VENV)/.stamp-system $(VENV)/.stamp-chromium $(VENV)/.stamp-deploy $(VENV)/.stamp-patroni $(VENV)/.stamp-pip

# PostgreSQL 15 server + client (psql; pgbench ships with the server package on Debian 12),
# MariaDB server + client (the MySQL-engine tests start their own mariadbd instances), sysbench,
# and ensurepip for `python3 -m venv`. Checked once; delete the stamp to check again.
$(VENV)/.stamp-system:
	@mkdir -p $(VENV)
	@if [ ! -x $(PG_BIN)/postgres ] || [ ! -x $(PG_BIN)/pgbench ] || [ ! -x $(PG_BIN)/psql ]; then \
		echo "make: installing PostgreSQL 15"; \
		apt-get update -q && $(APT_INSTALL) postgresql-15 postgresql-client-15; \
	fi
	@if ! command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null || ! command -v mariadb >/dev/null; then \
		echo "make: installing MariaDB server and client"; \
		apt-get update -q && $(APT_INSTALL) mariadb-server mariadb-client; \
	fi
	@if ! command -v sysbench >/dev/null; then \
		echo "make: installing sysbench"; \
		apt-get update -q && $(APT_INSTALL) sysbench; \
	fi
	@if ! command -v haproxy >/dev/null; then \
		echo "make: installing haproxy (bench/sysbench.py's TCP-forwarder floor)"; \
		apt-get update -q && $(APT_INSTALL) haproxy; \
		systemctl disable --now haproxy >/dev/null 2>&1 || true; \
	fi
	@if ! command -v redis-server >/dev/null; then \
		echo "make: installing redis-server (the query cache tests start private ones)"; \
		apt-get update -q && $(APT_INSTALL) redis-server; \
	fi
	@if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
		echo "make: installing python3-venv"; \
		apt-get update -q && $(APT_INSTALL) python3-venv; \
	fi
	@touch $@

# Headless Chromium for the status-page test (tests/test_status_page.py); its own stamp so
# existing checkouts get it too.
$(VENV)/.stamp-chromium:
	@mkdir -p $(VENV)
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "make: installing chromium"; \
		apt-get update -q && $(APT_INSTALL) chromium; \
	fi
	@touch $@

# systemd-analyze and systemd-sysusers for the unit-file tests (tests/test_deploy_systemd.py), shellcheck
# for deploy/'s shell scripts (tests/test_deploy_compose_scripts.py). The
# Kustomize render test uses kubectl's built-in kustomize (v4+) when kubectl is on PATH; Debian's
# kubernetes-client is too old for it (kustomize v2), so nothing is installed for it here.
$(VENV)/.stamp-deploy:
	@mkdir -p $(VENV)
	@if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then \
		echo "make: installing systemd (systemd-analyze verify for deploy/systemd)"; \
		apt-get update -q && $(APT_INSTALL) systemd; \
	fi
	@if ! command -v shellcheck >/dev/null; then \
		echo "make: installing shellcheck (deploy/ shell scripts)"; \
		apt-get update -q && $(APT_INSTALL) shellcheck; \
	fi
	@touch $@

# Patroni and etcd for the failover mode "patroni" tests (tests/test_patroni.py start a Patroni cluster);
# their own stamp so existing checkouts get them too.
$(VENV)/.stamp-patroni:
	@mkdir -p $(VENV)
	@if ! command -v patroni >/dev/null || ! command -v etcd >/dev/null; then \
		echo "make: installing patroni and etcd-server"; \
		apt-get update -q && $(APT_INSTALL) patroni etcd-server; \
	fi
	@touch $@

$(BIN)/python: | $(VENV)/.stamp-system
	python3 -m venv $(VENV)

$(VENV)/.stamp-pip: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,replay]'
	@touch $@

lint: install
	$(BIN)/ruff check proxy tests deploy bench
	$(BIN)/mypy proxy

test: lint
	$(BIN)/pytest -q -ra

# PostgreSQL primary + 2 replicas (ports 25432-25434; MariaDB 23306-23307) and dbproxy in the background, all in .demo/
demo: install
	$(BIN)/python -m deploy.demo

# The client libraries' own test suites directly and through dbproxy (bench/conformance.py); needs
# PEER_MIRRORS (../shared/peer/README.md); all three suites by default, e.g. CONFORMANCE_ARGS="--suites asyncpg,psycopg --modes session".
conformance: install
	$(BIN)/python -m bench.conformance $(CONFORMANCE_ARGS)

# Fuzz every parser with atheris (bench/fuzz/run.py): FUZZ_SECONDS per target (default 120); crashes in
# .fuzz/crashes/TARGET/. Not part of `make test`, which replays the seeds and past crashes only.
FUZZ_SECONDS ?= 120
fuzz: install
	$(BIN)/pip install -q -e '.[test,fuzz]'
	$(BIN)/python -m bench.fuzz.run --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

demo-stop:
	$(BIN)/python -m deploy.demo stop

# The benchmark report (bench/suite.py, about 15 minutes on 2 cores): direct / dbproxy workers=1 /
# workers=N / PgBouncer side by side; writes bench/results/RESULTS.md and its PNG plots.
# make bench BENCH_ARGS="--quick" for a check run; "--skip mysql,failover,ryw" leaves sections out.
bench: install bench-tools
	$(BIN)/python -m bench.suite $(BENCH_ARGS)

# The detailed pgbench tables (bench/run.py): per-endpoint routing cost, pooler CPU per transaction,
# profiles. make bench-pgbench BENCH_ARGS="--quick --only dbproxy --profile" (see bench/run.py --help);
# --mysql adds bench/sysbench.py, --ryw bench/ryw.py, --cache bench/cache.py, --tls bench/tls.py.
bench-pgbench: install bench-tools
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The container image from deploy/Dockerfile (needs a Docker engine: none runs where the tests run;
# tests/test_deploy_image.py runs the image's build steps in a virtualenv instead).
IMAGE ?= dbproxy:local
image:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# Debian's pgbouncer package may start a service on 6432 (the demo's writer port): keep it off.
bench-tools:
	@if [ ! -x /usr/sbin/pgbouncer ]; then \
		echo "make: installing pgbouncer"; \
		apt-get update -q && $(APT_INSTALL) pgbouncer; \
		systemctl disable --now pgbouncer >/dev/null 2>&1 || true; \
	fi
	@if ! command -v sysbench >/dev/null; then \
		echo "make: installing sysbench"; \
		apt-get update -q && $(APT_INSTALL) sysbench; \
	fi
	@if ! command -v haproxy >/dev/null; then \
		echo "make: installing haproxy (bench/sysbench.py's TCP-forwarder floor)"; \
		apt-get update -q && $(APT_INSTALL) haproxy; \
		systemctl disable --now haproxy >/dev/null 2>&1 || true; \
	fi
