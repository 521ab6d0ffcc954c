# The two commands: `make train` and `make test`. Both set everything up on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PREPARED := data/tfds/mnist/3.0.1/dataset_info.json
KERNELS := dnn_jax/kernels/_build/libdnn_jax_onednn.so
EXPERIMENT ?= mnist_mlp
# The data and the kernels build side by side on a fresh clone.
MAKEFLAGS += --jobs=2

.PHONY: train test test-fast lint format data clean

train: $(PREPARED) $(KERNELS)
	$(PY) -m dnn_jax.main --config experiments/$(EXPERIMENT).py --workdir runs/$(EXPERIMENT)

test: $(PREPARED) $(KERNELS)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 2 --durations=25 --strict-markers tests  # two workers: most tests use one core, CI has two; the slowest 25 listed to keep CI short

test-fast: $(PREPARED) $(KERNELS)
	$(PY) -m pytest -q -n 2 --strict-markers -m 'not slow and not e2e and not multiprocess' tests  # no subprocess runs, nothing slow: the edit-test loop

data: $(PREPARED)

# oneDNN's convolutions (dnn_jax/kernels); without g++ or oneDNN: one line, and XLA's are used
$(KERNELS): dnn_jax/kernels/onednn_conv.cc $(INSTALLED)
	$(PY) -m dnn_jax.kernels.build

$(PREPARED): $(INSTALLED)
	$(PY) -m dnn_jax.data.prepare mnist

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(INSTALLED)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf runs data/tfds
