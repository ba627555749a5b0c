# Two commands on a fresh clone (only python3.11 needed):
#   make train   set up .venv if needed, then run the main job (classification on its embedded data)
#   make test    set up .venv if needed, then run the whole test suite
PY := .venv/bin/python

.PHONY: setup train test test-fast test-extended clean check-aarch64
setup:
	bash scripts/setup.sh

train: setup
	$(PY) classification/train.py

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The tests that use the larger real data slices: make test-extended SHUFFLENET_DATA=/path/to/data
# (exit status 5, "no tests ran", counts as success: there may be none to run).
test-extended: setup
	@test -n "$(SHUFFLENET_DATA)" || { echo "test-extended: set SHUFFLENET_DATA=/path/to/data" >&2; exit 2; }
	SHUFFLENET_DATA="$(SHUFFLENET_DATA)" $(PY) -m pytest -q -m extended; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# Emulated aarch64 check of the .ptl, ONNX and ncnn exports (qemu-user, aarch64 wheels; slow, not in CI): docs/mobile.md
check-aarch64: setup
	bash mobile/check_aarch64.sh

clean:
	rm -rf .venv .pytest_cache build
