"""End-to-end learning check: WPO learns cartpole swingup within minutes on a CPU.

Marked slow (deselect with -m "not slow"); ~1-1.5 min on 2 shared CPU cores.
Reference points for this task (1000-step episodes): a random policy scores
~22, the zero action ~0; within a few thousand steps WPO reaches a swinging
plateau (~120-250); solved swingup scores in the literature are ~800+.

Settings: the 'small' preset with learning rates 1e-3 and the max bootstrap
(the paper's Control Suite choice) as overrides, for 4000 actor steps. Final
eval returns measured with these settings on 2 shared CPU cores: seed 0: 223,
227, 181; seed 1: 223, 149, 167; seed 2: 205, 177; seed 3: 185; seed 4: 254;
seed 5: 149 (the 'small' preset alone: 124-165 at 4000 steps, seeds 0-2).
Runs are not bit-reproducible (the learner samples replay from background
threads: seed 0 gave 181 to 227) and returns move up and down on the plateau,
so the bound is 100: >4x random, ~50 below the lowest value seen. Set
WPO_LEARN_SEED to try another seed.
"""

import os
import time

import pytest

from wpo_agent import config as config_lib
from wpo_agent import runs
from wpo_agent import single_process

ACTOR_STEPS = 4000
OVERRIDES = dict(policy_learning_rate=1e-3, critic_learning_rate=1e-3,
                 bootstrap_aggregate='max')
THRESHOLD = 100.0  # deterministic eval return (random policy: ~22)


@pytest.mark.slow
def test_wpo_learns_cartpole_swingup(tmp_path):
  seed = int(os.environ.get('WPO_LEARN_SEED', '0'))
  config = config_lib.make_config('small', **OVERRIDES)
  run = runs.RunOptions(
      domain='cartpole', task='swingup', seed=seed, workdir=str(tmp_path),
      max_actor_steps=ACTOR_STEPS, eval_every=ACTOR_STEPS, eval_episodes=3,
      progress_every_s=30.0, checkpoint_every_s=1e9, tensorboard=False,
      quiet=True,
      # The returns above were measured with one environment. With the default
      # 16, each environment makes 250 of its 1000 steps in 4000 actor steps
      # and the replay never holds the upright phase (BUILD_NOTES, `make run`).
      envs_per_actor=1)
  start = time.time()
  summary = single_process.train(run, config)
  wall = time.time() - start
  print(f'\ncartpole swingup seed {seed}: eval return '
        f'{summary["last_eval_return"]:.1f} after {summary["actor_steps"]} '
        f'actor steps, {summary["learner_steps"]} learner steps, {wall:.0f} s')
  assert summary['actor_steps'] == ACTOR_STEPS
  assert summary['learner_steps'] > 0
  assert summary['last_eval_return'] >= THRESHOLD, summary
