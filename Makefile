# Two commands do everything on a fresh machine:
#   make demo   set up .venv; imbalanced shapes, a collapsed baseline, its cure, one report (demo_out/report.html)
#   make test   set up .venv (with test tools), run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out
# Test processes (pytest-xdist). Most of a tiny-model test is single-threaded Python (building and
# tracing Model Garden's model), so 2 processes use 2 cores; each holds its own TensorFlow (~2 GB).
TEST_WORKERS ?= 2
# --dist loadfile keeps a test file in one process, so module fixtures are built once.
PYTEST := $(PY) -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile

.PHONY: demo test test-fast test-imgaug lint setup clean weights

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(PY) -m tfmaskrcnn demo --output $(DEMO_DIR)

# --durations=25: the slowest tests, kept in the CI log so that a slowdown shows.
test: setup lint weights
	$(PYTEST) --durations=25
	$(MAKE) test-imgaug

# torchvision's ImageNet MobileNetV2 file, hash-checked, for `tfmaskrcnn import-backbone`, its tests
# and benchmarks/real_data.py (weights_cache/, ignored by git; nothing is fetched at training time).
weights: setup
	$(PY) tools/fetch_weights.py

# One code style (ruff format + lint) and the package layers (import-linter contract in
# pyproject.toml; docs/architecture.md draws them).
lint: setup
	$(VENV)/bin/ruff format --check tfmaskrcnn tests tools benchmarks export
	$(VENV)/bin/ruff check tfmaskrcnn tests tools benchmarks export
	$(VENV)/bin/lint-imports

# The imgaug adapter needs numpy<2, so it is tested for real in a second environment.
test-imgaug:
	bash ci/imgaug_env.sh

test-fast: setup
	$(PYTEST) -m "not slow"

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
