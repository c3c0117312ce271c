# Fresh-machine entry points. Both create .venv (Python 3.10) if it is missing.
#   make test   - set up and run the test suite
#   make run    - set up and run a short real training run
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: venv test test-fast run bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	@bash scripts/make_venv.sh "$(VENV)"

test: venv
	$(PY) -m pytest tests -q

test-fast: venv
	$(PY) -m pytest tests -q -m "not slow"

run: venv
	$(PY) launch/run_local.py --domain=cartpole --task=swingup --single_process \
	  --max_actor_steps=20000 --eval_every=5000 --workdir=runs/make-run

bench: venv
	$(PY) bench/bench_learner.py
	$(PY) bench/bench_actor.py

clean:
	rm -rf $(VENV) .pytest_cache
