# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(BIN)/flchain: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU build that ships on this machine's disk; a bare
	# `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all,test]'
	touch $(BIN)/flchain

install: $(BIN)/flchain

demo: install
	$(BIN)/python examples/federated_demo.py --out runs/demo

test: install
	$(BIN)/ruff check flchain_plugin tests bench examples integrations
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check flchain_plugin tests bench examples integrations

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs build *.egg-info
