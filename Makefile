# Set-up and everyday commands. Both `run` and `test` create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; override (e.g. TORCH_SPEC="torch==2.14.1") for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8501

.PHONY: run test venv dev-venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/streamlit run app.py --server.address localhost --server.port $(PORT) --server.headless true

test: venv
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
