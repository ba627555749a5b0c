# Two commands on a fresh clone (only python3.11 needed):
#   make train   set up .venv if needed, then run the main job (classification on its embedded data)
#   make test    set up .venv if needed, then run the whole test suite
PY := .venv/bin/python

.PHONY: setup train test test-fast clean
setup:
	bash scripts/setup.sh

train: setup
	$(PY) classification/train.py

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf .venv .pytest_cache build
