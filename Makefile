# Each target creates .venv with the machine's Python 3.11 on first use and installs the project
# (editable, with the dev extras) into it; later runs reinstall only when pyproject.toml changes.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<26"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/scenariolab run scenarios/quickstart.yaml --out runs

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/scenariolab demo

bench: $(STAMP)
	$(BIN)/python benchmarks/ppo_vs_sb3.py
	$(BIN)/python benchmarks/dqn_vs_sb3.py
	$(BIN)/python benchmarks/compile_cpu.py
	$(BIN)/python benchmarks/learning_cartpole.py
	@for script in benchmarks/*.py; do \
		case $$script in */ppo_vs_sb3.py|*/dqn_vs_sb3.py|*/compile_cpu.py|*/learning_cartpole.py|*/bench_common.py) ;; *) $(BIN)/python $$script || exit $$?;; esac; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
