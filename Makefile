# Two commands set everything up on a fresh machine (python3, pip and make only):
#   make train ARGS="--recipe fast --time 10"   creates .venv, installs cifarnet, trains for
#                                               10 minutes (the default ARGS)
#   make train ARGS="--epochs 70"               the default recipe's full 70-epoch run
#   make test                                   creates .venv, installs cifarnet[dev], runs
#                                               the suite
#   make docs                                   rewrites docs/settings.md from TrainConfig
#   make compat TORCH=2.5.1 TORCHVISION=0.20.1 PYTHON=python3.10
#                                               the suite and an export of every model in a
#                                               throwaway environment with those versions
#                                               (benchmarks/compat.sh; docs/compatibility.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?= --recipe fast --time 10

.PHONY: train test lint install docs compat

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install
	$(BIN)/cifarnet train $(ARGS)

# pytest exits 5 when it collects nothing: that must fail, never pass silently.
test: install
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
	$(BIN)/ruff check cifarnet tests benchmarks

lint: install
	$(BIN)/ruff check cifarnet tests benchmarks
	$(BIN)/ruff format --check cifarnet tests benchmarks

docs: install
	$(BIN)/python -m cifarnet.config.docs > docs/settings.md

compat:
	benchmarks/compat.sh --torch "$(TORCH)" --torchvision "$(TORCHVISION)" --python "$(PYTHON)" \
		$(COMPAT_ARGS)
