# The two commands of the README: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-rainmer

.PHONY: venv test demo lint bench clean

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "rainmer needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch and torchvision from the same index in one call: a matching pair (the CUDA build also runs on CPU)
	$(PY) -m pip install torch torchvision
	$(PY) -m pip install -e '.[dev,analysis]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/rainmer demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_output experiments results tb_logger .pytest_cache
