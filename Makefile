# make train: create .venv, install requirements.txt, train with the defaults (ARGS adds flags)
# make test:  the pytest suite, in the same .venv
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test clean-venv

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

train: $(VENV)/installed
	$(PY) part1/train_torch.py $(ARGS)

test: $(VENV)/installed
	$(PY) -m pytest tests/

clean-venv:
	rm -rf $(VENV)
