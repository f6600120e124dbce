# fsmfast set-up. On a fresh Debian 12 (Python 3.10+, root) these two are all that is needed:
#   make demo   - the founding scenario on this machine: 502 without the upstream TLS policy, 200 with it
#   make test   - Debian packages, venv, build, ruff, mypy, the whole suite, then the unit tests over the pure-Python twin
#
# Both targets use .venv (created with `$(PYTHON) -m venv` when absent) and a normal, non-editable install:
# an editable install does not always put the compiled fsmfast._parser where the code imports it from.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check --no-input
# Installed into the venv once so every build below can run without isolation (no re-download per build).
BUILD_REQS := "setuptools>=68" wheel "Cython>=3"
PYTEST := $(VPY) -m pytest -q -p no:cacheprovider

.PHONY: all demo test bench venv install-demo install-test inplace lint typecheck clean distclean

all: test

# A venv whose interpreter vanished (e.g. Python upgraded) is rebuilt instead of failing obscurely.
venv:
	@if [ ! -x "$(VPY)" ] || ! "$(VPY)" -c 'import sys' >/dev/null 2>&1; then \
		rm -rf "$(VENV)"; \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv "$(VENV)"; \
	fi
	$(PIP) install -q $(BUILD_REQS)

# build/ is removed first: setuptools reuses build/lib, so a module deleted from the source would survive there.
install-demo: venv
	rm -rf build
	$(PIP) install -q --no-build-isolation ".[demo]"

install-test: venv
	rm -rf build
	$(PIP) install -q --no-build-isolation ".[test]"

# pytest puts the checkout first on sys.path (tests/ is a package), so the tests import fsmfast from here:
# build the extensions in place too, and fail now rather than silently testing the pure-Python twins only.
inplace: venv
	$(VPY) setup.py -q build_ext --inplace
	$(VPY) -c 'import fsmfast._parser'
	$(VPY) -c 'from fsmfast._compiled import COMPILED, compiled_modules as c; assert c() == COMPILED, c()'

demo:
	bash .ci/sysdeps "$(PYTHON)" demo
	$(MAKE) --no-print-directory install-demo
	$(VENV)/bin/fsmfast demo

lint:
	$(VENV)/bin/ruff check fsmfast tests bench setup.py

# mypy over fsmfast/, configured in pyproject.toml ([tool.mypy]); the compiled modules are checked through their .py.
typecheck:
	$(VPY) -m mypy

test:
	bash .ci/sysdeps "$(PYTHON)" test
	$(MAKE) --no-print-directory install-test
	$(MAKE) --no-print-directory inplace
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory typecheck
	$(PYTEST)
	@# The same unit tests over the pure-Python twins (fsmfast/_compiled.py honours FSMFAST_NO_EXTENSIONS).
	if [ -d tests/unit ]; then FSMFAST_NO_EXTENSIONS=1 $(PYTEST) tests/unit; fi

# fsmfast, nginx and HAProxy side by side (bench/README.md). The harness installs nginx, haproxy, wrk, redis-server
# (Debian) and matplotlib (pip, into the venv) itself when absent. Options go in BENCH_ARGS, e.g.
#   make bench BENCH_ARGS="--quick --scenarios S1,S4"
BENCH_ARGS ?=
bench:
	bash .ci/sysdeps "$(PYTHON)" bench
	$(MAKE) --no-print-directory install-test
	$(MAKE) --no-print-directory inplace
	$(VPY) -m bench $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
	rm -f fsmfast/*.so fsmfast/_parser.c fsmfast/_parser.html fsmfast/proxy/*.so fsmfast/proxy/*.c fsmfast/proxy/*.html fsmfast/worker/*.so fsmfast/worker/*.c fsmfast/worker/*.html fsmfast/tls/*.so fsmfast/tls/*.c fsmfast/tls/*.html

distclean: clean
	rm -rf $(VENV)
