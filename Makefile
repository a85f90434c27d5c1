# Two entry points on a fresh clone: `make devnet` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install devnet test lint proto bench clean

$(VENV)/.installed: pyproject.toml setup.py tools/gen_proto.py $(wildcard proto/zkpot/v1/*.proto)
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

proto: install
	$(PY) tools/gen_proto.py

devnet: install
	$(VENV)/bin/zkpot devnet $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info devnet-data zkpot/v1/*_pb2*.py zkpot/v1/*_pb2*.pyi
