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

# make report-runs: the report's two trainings (z_dim 20, then z_dim 2) into part1/VAE_logs/; ARGS adds flags
#                   (e.g. --data_dir)
# make report:      report 2.8-2.10 (figures, results.md, the results table) again from the committed runs the report
#                   names (REPORT_RUN, REPORT_RUN_Z2); from other runs only when named: RUN=<z20 run> [RUN_Z2=<z2 run>]
#                   (make_figures.py refuses runs on other data than the report's title states)
REPORT_RUN := report/runs/2026-11-21_12-52-57_z20
REPORT_RUN_Z2 := report/runs/2026-11-21_12-55-57_z2
RUN ?=
RUN_Z2 ?=

.PHONY: report report-runs

report-runs: $(VENV)/installed
	$(PY) part1/train_torch.py $(ARGS) --z_dim 20
	$(PY) part1/train_torch.py $(ARGS) --z_dim 2

report: $(VENV)/installed
	$(if $(RUN_Z2),$(if $(RUN),,$(error RUN_Z2 needs RUN, the main (z_dim 20) run, too)))
	$(PY) report/make_figures.py $(if $(RUN),$(RUN) $(RUN_Z2),$(REPORT_RUN) $(REPORT_RUN_Z2))
