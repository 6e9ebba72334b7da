# Two entry points (see README): `make tutorial` runs the whole course headless on the tiny
# profile, `make test` runs the test suite. Both set up the environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= tiny
# The CPU build of torch; on a CUDA machine use e.g. TORCH_SPEC="torch==2.14.1".
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# progress bars in executed notebooks: one line every 10 s instead of ten a second
export TQDM_MININTERVAL ?= 10
# nbval executes every notebook as committed (tiny defaults) and checks that each cell runs
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout 3600 --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup tutorial test test-fast base-model clean demo lab site slides

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

tutorial: setup
	$(PY) -m phi3v_tutorial.run_notebooks --profile $(PROFILE)

# the course published from the last `make tutorial` of PROFILE, nothing executed again (README):
# a static site in runs/$(PROFILE)/site, reveal.js slides in runs/$(PROFILE)/slides; both work offline
site: setup
	$(PY) -m phi3v_tutorial.publish site --profile $(PROFILE)

slides: setup
	$(PY) -m phi3v_tutorial.publish slides --profile $(PROFILE)

# a local page (127.0.0.1:7860) to drop a photo on: the last run's fine-tuned model, else the base model
DEMO_ARGS ?=
demo: setup
	$(PY) -m phi3v_tutorial.demo --profile $(PROFILE) $(DEMO_ARGS)

# JupyterLab on the course; the environment is also installed as the user's kernel "phi3v-tutorial"
# (as root, in a container, JupyterLab needs --allow-root)
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(PY) -m ipykernel install --user --name phi3v-tutorial --display-name "Python (phi3v-tutorial)"
	$(PY) -m jupyter lab notebooks/ $(LAB_ARGS)

# notebooks/ first: nbval's pass is the tiny series' one execution, and the series tests assert on the
# metrics it records (conftest.py); the full profile's path runs once through the papermill runner
test: setup
	$(PY) -m pytest $(NBVAL) notebooks tests $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" tests $(PYTEST_ARGS)

# Rebuilds the committed tiny base model (about 50 min on 2 CPU cores; see its model card)
base-model: setup
	$(PY) -m phi3v_tutorial.tiny_base_model --out models/tiny-phi3v-base

# keeps models/tiny-phi3v-base: it is part of the course, not an output
clean:
	rm -rf runs data/catalog data/cache .pytest_cache
	find models -mindepth 1 -maxdepth 1 ! -name tiny-phi3v-base -exec rm -rf {} +
