# The two commands of the quick start are `make run` and `make test`; everything else is a step of them.
# Each step installs what it needs before anything uses it: Debian packages first
# (scripts/debian-packages.txt), then the venv, then the project's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.core-stamp
FULL   := $(VENV)/.full-stamp
# what `make test` installs: the test tools and every optional extra (Kerberos needs libkrb5-dev)
EXTRAS := test,kerberos

.PHONY: run test venv certs system peers policy-test check bench audit-crash clean docs

# the core only: binary wheels, no compiler (what `make run` needs)
$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# the extras; the Debian packages they build against are installed first (peers)
$(FULL): $(CORE) | peers
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

system:
	scripts/install-peers.sh run

venv: system $(CORE)

certs: venv
	$(BIN)/python -m iam_proxy.devcerts certs

run: venv certs
	scripts/run-quickstart.sh

check: venv certs
	$(BIN)/iam-proxy check --config examples/quickstart.yaml

policy-test: venv
	scripts/install-peers.sh opa
	$(BIN)/iam-proxy policy test policies/

peers:
	scripts/install-peers.sh

# the pages generated from the code: docs/configuration-reference.md, docs/reason-codes.md
docs: venv
	$(BIN)/iam-proxy docs

test: peers $(FULL) certs
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: peers $(FULL) certs
	scripts/bench.sh $(if $(QUICK),--quick,)

# the long audit crash test (100 SIGKILLs each with 1 and 2 workers; `make test` runs 20 each)
audit-crash: peers $(FULL) certs
	$(BIN)/python tests/audit/crash_harness.py --kills $(or $(KILLS),100) --out bench/results/audit-crash.json

clean:
	rm -rf $(VENV) var test-artifacts
