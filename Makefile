# Two entry points for a fresh machine: `make demo` and `make test`; both create or reuse .venv/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-10m bench-manifest bench-events install clean constraints test-tools

# Every install takes the exact versions in constraints.txt (see `make constraints` below).
$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dth-ray demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint test-tools
	$(VENV)/bin/pytest -q -rs -p no:cacheprovider tests

# System tools some tests drive, from Debian's packages where missing and we are root (else those tests skip,
# printing why): Chromium for the console's browser tests (through Playwright, no browser download) and
# Prometheus for the Grafana dashboard's queries against Ray's own prometheus.yml.
test-tools:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$missing >/dev/null) || echo "make: could not install$$missing with apt; their tests will skip"; \
	  else echo "make: no$$missing and no root apt-get; their tests will skip"; fi; fi

# The benchmark suite (benchmarks/README.md): `make bench` full, `make bench QUICK=1` reduced (< 5 min).
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	-$(PY) benchmarks/wan.py deps
	$(PY) benchmarks/suite.py $(if $(QUICK),--quick,)

# 10 M keys through the real CLI (`dth-ray sync dry_run=true` with runtime.ray=always and auto, `dth-ray plan`)
# against a synthetic S3 endpoint; peak PSS summed over every process of each run (benchmarks/README.md).
bench-10m: $(STAMP)
	$(PY) benchmarks/bench_10m.py $(if $(KEYS),--keys $(KEYS),)

# Manifest writes counted at the server (100,000 objects and a no-change rerun; DynamoDB on moto).
bench-manifest: $(BENCH_STAMP)
	$(PY) benchmarks/bench_manifest.py

# Event latency of `dth-ray watch` (events=sqs on moto) at rising rates until something saturates.
bench-events: $(BENCH_STAMP)
	$(PY) benchmarks/bench_events.py

# constraints.txt: one exact version of every package `make` installs (the project's dependencies with the
# test and bench extras, and all of theirs), for every Python the project supports: a universal resolution
# by uv, with environment markers where an older Python needs an older release. The OSS forwarder's
# requirements.txt (boto3 and its dependencies, with wheel hashes) is resolved from the same pins.
#   make constraints                  after editing pyproject.toml: keeps current pins that still fit
#   make constraints UPGRADE=all      every package to its newest allowed release
#   make constraints UPGRADE=aiohttp  that one package (and what it needs)
UV_VERSION := 0.13.9
TOOLS := .venv-tools
FORWARDER := dth_ray/functions/oss_forwarder
UPGRADE ?=
UPGRADE_FLAGS := $(if $(filter all,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE),))

constraints:
	test -x $(TOOLS)/bin/uv || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q uv==$(UV_VERSION); }
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra test --extra bench --universal --python-version 3.10 \
	    $(UPGRADE_FLAGS) --custom-compile-command 'make constraints' -o constraints.txt
	$(TOOLS)/bin/uv pip compile $(FORWARDER)/requirements.in -c constraints.txt --python-version 3.10 \
	    --python-platform x86_64-manylinux2014 --generate-hashes --custom-compile-command 'make constraints' \
	    -o $(FORWARDER)/requirements.txt

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
