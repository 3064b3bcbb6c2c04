# The two commands of the quick start are `make run` and `make test`; everything else is a step of them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test venv certs peers policy-test check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

certs: venv
	$(BIN)/python -m iam_proxy.devcerts certs

run: venv certs
	scripts/install-peers.sh runtime
	scripts/run-quickstart.sh

check: venv certs
	$(BIN)/iam-proxy check --config examples/quickstart.yaml

policy-test: venv
	scripts/install-peers.sh opa
	$(BIN)/iam-proxy policy test policies/

peers:
	scripts/install-peers.sh

test: venv certs peers
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: venv certs peers
	scripts/bench.sh $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) var test-artifacts
