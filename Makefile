# Two entry points on a fresh clone: `make devnet` and `make test`.
VENV ?= .venv
TORCH_VARIANT ?= cpu
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install devnet test test-fast lint proto bench clean images

$(VENV)/.installed: pyproject.toml constraints.txt setup.py tools/gen_proto.py tools/install-torch.sh $(wildcard proto/zkpot/v1/*.proto)
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to its CPU build (torch==2.13.0+cpu) wherever this runs: PyPI's plain
	# torch==2.13.0 on Linux is the multi-GB CUDA build. TORCH_VARIANT=cuda asks for that one.
	tools/install-torch.sh $(PIP) $(TORCH_VARIANT)
	# the runtime lock (constraints.txt: the versions the images hold); torch was pinned above
	grep -v '^torch==' constraints.txt > $(VENV)/constraints.txt
	$(PIP) install -q -c $(VENV)/constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

proto: install
	$(PY) tools/gen_proto.py

devnet: install
	$(VENV)/bin/zkpot devnet $(ARGS)

# Container images from Debian's and PyPI's packages only (no registry; root for debootstrap, a
# running dockerd): zkpot:dev and zkpot-prover-gpu:dev. IMAGES=cpu builds zkpot:dev alone.
IMAGES ?= all
images: install
	PIP=$(abspath $(PIP)) deploy/docker/build-images.sh $(IMAGES)

BUF_VERSION ?= 1.75.0

lint: install
	$(VENV)/bin/ruff check .
	tools/buf-check.sh $(BUF_VERSION)

# -rs: say why anything was skipped. The full suite: 26 min on a 2-core machine (522 tests, a fresh-clone CI run).
test: install lint
	$(VENV)/bin/pytest -q -rs --durations=25 $(PYTEST_ARGS)

# Everything but the end-to-end runs with real proofs over whole networks (marked slow): a few minutes.
test-fast: install lint
	$(VENV)/bin/pytest -q -rs -m 'not slow' $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info devnet-data zkpot/v1/*_pb2*.py zkpot/v1/*_pb2*.pyi
