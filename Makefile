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
	$(PY) -m pytest tests -q --durations=15

test-fast: venv
	$(PY) -m pytest tests -q -m "not slow" --durations=15

# A short real distributed run: replay, learner, 2 actors, evaluator (a few minutes).
run: venv
	@rm -rf runs/make-run  # a fresh demo each time (a real run resumes its workdir)
	$(PY) launch/run_local.py --domain=cartpole --task=swingup --config=small \
	  --num_actors=2 --max_actor_steps=10000 --eval_every=2500 --workdir=runs/make-run

bench: venv
	$(PY) bench/bench_learner.py
	$(PY) bench/bench_writer.py
	$(PY) bench/bench_distributed.py

clean:
	rm -rf $(VENV) .pytest_cache
