# make train: create .venv, install requirements.txt, train with the defaults (ARGS adds flags)
# make test:  the pytest suite, in the same .venv; make test-quick: without the slow end-to-end tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test test-quick clean-venv

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

train: $(VENV)/installed
	$(PY) part1/train_torch.py $(ARGS)

test: $(VENV)/installed
	$(PY) -m pytest tests/

test-quick: $(VENV)/installed
	$(PY) -m pytest -m "not slow" tests/

clean-venv:
	rm -rf $(VENV)

# make report-runs: the report's two trainings (z_dim 20, then z_dim 2); ARGS adds flags, e.g. --data_dir
# make report:      figures, results.md and the report's table from the newest z20 and z2 runs (or RUN=, RUN_Z2=)
RUN ?= $(lastword $(sort $(wildcard part1/VAE_logs/*_z20)))
RUN_Z2 ?= $(lastword $(sort $(wildcard part1/VAE_logs/*_z2)))

.PHONY: report report-runs

report-runs: $(VENV)/installed
	$(PY) part1/train_torch.py $(ARGS) --z_dim 20
	$(PY) part1/train_torch.py $(ARGS) --z_dim 2

report: $(VENV)/installed
	$(PY) report/make_figures.py $(RUN) $(RUN_Z2)
