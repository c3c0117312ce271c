# Fresh-machine entry points. Both create .venv (Python 3.10) if it is missing.
#   make test   - set up and run the test suite
#   make run    - set up and run a short real training run
#   make venv-gpu (or GPU=1 with any target) - the same venv plus JAX's CUDA 12 plugin
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
GPU ?= 0
export MUJOCO_GL ?= egl

.PHONY: venv venv-gpu test test-fast run bench clean

# With GPU=1 every target below uses (and if needed builds) the GPU venv, so a
# requirements.txt change rebuilds it with the CUDA wheels rather than without.
ifeq ($(GPU),1)
venv: venv-gpu
else
venv: $(VENV)/.installed
endif

venv-gpu: $(VENV)/.installed-gpu

$(VENV)/.installed: requirements.txt setup.py
	@bash scripts/make_venv.sh "$(VENV)"

# A separate stamp: on a built CPU venv this only adds the CUDA wheels; a CPU
# rebuild deletes the venv and so this stamp with it.
$(VENV)/.installed-gpu: $(VENV)/.installed
	@bash scripts/make_venv.sh "$(VENV)" --gpu

# Two pytest workers (pytest-xdist); the tests that launch whole programs go
# to one of them, one at a time (tests/conftest.py).
WORKERS ?= 2
test: venv
	$(PY) -m pytest tests -q -n $(WORKERS) --durations=15

test-fast: venv
	$(PY) -m pytest tests -q -n $(WORKERS) -m "not slow" --durations=15

# A short real distributed run: replay, learner, 2 actors, evaluator (a few minutes).
run: venv
	@rm -rf runs/make-run  # a fresh demo each time (a real run resumes its workdir)
	$(PY) launch/run_local.py --domain=cartpole --task=swingup --config=small \
	  --num_actors=2 --envs_per_actor=4 --max_actor_steps=10000 --eval_every=2500 \
	  --workdir=runs/make-run

bench: venv
	$(PY) bench/bench_learner.py
	$(PY) bench/bench_writer.py
	$(PY) bench/bench_distributed.py

clean:
	rm -rf $(VENV) .pytest_cache
