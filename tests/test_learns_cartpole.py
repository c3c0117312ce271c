"""End-to-end learning check: WPO, and each of the paper's baselines on the
same harness, learns cartpole swingup within minutes on a CPU.

The 'small' preset with learning rates 1e-3 (and, for WPO and MPO, the max
bootstrap: the paper's Control Suite choice), 4000 actor steps, then a
3-episode deterministic evaluation at least the algorithm's threshold: a
random policy scores ~22, the zero action ~0. The thresholds and the returns
seen per seed: BUILD_NOTES.md, "Evidence that it learns" and "The paper's
baselines". WPO_LEARN_SEED picks another seed.
"""

import os
import time

import pytest

from wpo_agent import config as config_lib
from wpo_agent import runs
from wpo_agent import single_process

ACTOR_STEPS = 4000
OVERRIDES = dict(policy_learning_rate=1e-3, critic_learning_rate=1e-3)
MAX_BOOTSTRAP = ('wpo', 'mpo')  # the critics that bootstrap from N samples
# Deterministic eval return (random policy: ~22), a margin below the lowest
# of seeds 0-2 (BUILD_NOTES.md).
THRESHOLDS = {'wpo': 100.0, 'mpo': 150.0, 'ddpg': 100.0, 'sac': 60.0}


@pytest.mark.slow
@pytest.mark.parametrize('algorithm', list(THRESHOLDS))
def test_learns_cartpole_swingup(tmp_path, algorithm):
  seed = int(os.environ.get('WPO_LEARN_SEED', '0'))
  config = config_lib.make_config(
      'small', algorithm=algorithm, **OVERRIDES,
      **(dict(bootstrap_aggregate='max') if algorithm in MAX_BOOTSTRAP
         else {}))
  run = runs.RunOptions(
      domain='cartpole', task='swingup', seed=seed, workdir=str(tmp_path),
      max_actor_steps=ACTOR_STEPS, eval_every=ACTOR_STEPS, eval_episodes=3,
      progress_every_s=30.0, checkpoint_every_s=1e9, tensorboard=False,
      quiet=True,
      # The thresholds were measured with one environment. With the default
      # 16, each environment sees only the first 250 steps of an episode in
      # 4000 actor steps, staggered starts or not (BUILD_NOTES, "Decorrelated
      # starts": lower returns, more spread).
      envs_per_actor=1)
  start = time.time()
  summary = single_process.train(run, config)
  wall = time.time() - start
  print(f'\n{algorithm} cartpole swingup seed {seed}: eval return '
        f'{summary["last_eval_return"]:.1f} after {summary["actor_steps"]} '
        f'actor steps, {summary["learner_steps"]} learner steps, {wall:.0f} s')
  assert summary['actor_steps'] == ACTOR_STEPS
  assert summary['learner_steps'] > 0
  assert summary['last_eval_return'] >= THRESHOLDS[algorithm], summary
