# Two entry points: `make demo` and `make test`. Both create .venv when missing (idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test venv lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first (the CPU wheel the machine provides), then the one torchvision that pins exactly that
# torch, then the package: this order keeps pip from swapping in a CUDA torch.
$(STAMP): $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet torchvision==0.28.0
	$(BIN)/pip install --quiet -e .
	# an editable install skips setup.py's build_py, which ships this startup hook in wheels (see setup.py)
	$(BIN)/python -c "import shutil, sysconfig; shutil.copy('src/clipdistill-torchvision-shim.pth', sysconfig.get_paths()['purelib'])"
	touch $(STAMP)

# the test tools (pytest, ruff, onnxruntime, ...) only for `make test`: the demo does not need them
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/clipdistill demo --out runs/demo

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
