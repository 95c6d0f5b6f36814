# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv and installs).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,examples,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/bert_layer_demo.py

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/bench_linear.py
	$(PY) benchmarks/bench_bert_layer.py
	$(PY) benchmarks/bench_gpt2_block.py
	$(PY) benchmarks/bench_pattern_conv.py
	$(PY) benchmarks/bench_structured.py
	$(PY) benchmarks/bench_threads.py
	$(PY) benchmarks/bench_half.py
	$(PY) benchmarks/bench_bert_layer_half.py
	$(PY) benchmarks/bench_amx_blocks.py
	$(PY) benchmarks/bench_float32_in_bfloat16.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
