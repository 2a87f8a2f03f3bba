# Thin aliases over the scripts; see README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: rollback up test install lint typecheck format stack-up stack-down stack-status reliability clean

# torch with its CUDA libraries (about 5.6 GB installed, 3 GB to download): fetched once per machine into the
# wheelhouse, installed from there, so a fresh checkout (CI) does not download it again. The requirement is the
# `torch` extra of pyproject.toml.
WHEELHOUSE ?= $(HOME)/.cache/aether-wheels
TORCH_REQUIREMENT = $(shell $(PYTHON) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['torch'])")

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip download --quiet --dest $(WHEELHOUSE) '$(TORCH_REQUIREMENT)'
	$(PY) -m pip install --quiet --no-index --find-links $(WHEELHOUSE) '$(TORCH_REQUIREMENT)'
	$(PY) -m pip install --quiet -e '.[dev,ml,torch]'  # ml, torch: the model tests train LightGBM, XGBoost, PyTorch
	touch $@

install: $(VENV)/.installed

up: install
	$(PY) -m aether up $(UP_ARGS)

test: install
	bash ops/test.sh

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

typecheck: install
	$(PY) -m mypy

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

stack-up: install
	$(PY) -m ops.stack_cli up

stack-down: install
	$(PY) -m ops.stack_cli down

stack-status: install
	$(PY) -m ops.stack_cli status

reliability: install
	$(PY) -m ops.reliability_report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports

# Blue/green: live traffic back to the other colour, one command (docs/deployment/blue_green_rollout.md).
rollback:
	bash deploy/helm/bluegreen.sh rollback $(RELEASE) $(NAMESPACE)
