"""Tests for wpo_agent.builder.Builder: what each part of a run gets from the
config and the run options (runs.RunOptions, whose --envs_per_actor check is
here too: the Builder splits the environments by it)."""

import jax
import numpy as np
import pytest

from wpo_agent import acting
from wpo_agent import config as config_lib
from wpo_agent import environments
from wpo_agent import runs
from wpo_agent import seeds as seeds_lib


@pytest.mark.parametrize('value', [0, -2, 1.5, '4', True, 257])
def test_envs_per_actor_bad_values(value):
  with pytest.raises(runs.RunOptionsError,
                     match=r'--envs_per_actor=.*integer from 1 to 256'):
    runs.RunOptions(domain='cartpole', envs_per_actor=value)


def test_builder_gives_environment_e_of_actor_a_the_seeds_of_actor_a_e():
  """Actor process 1 with E = 4 steps the environments (and draws from the
  keys) of one-environment actors 4..7."""
  from wpo_agent import builder as builder_lib  # pylint: disable=g-import-not-at-top
  run = runs.RunOptions(domain='cartpole', envs_per_actor=4, seed=7)
  config = config_lib.make_config('small')
  loop = builder_lib.Builder(config, run).actor_loop(
      acting.StaticVariableSource(), actor_index=1, start_actor_steps=500,
      writer=None)
  seeds = [seeds_lib.actor_seeds(run, actor_index=i, start_actor_steps=500)
           for i in range(4, 8)]
  first = [environments.make_environment('cartpole', 'swingup', seed=env)
           .reset().observation for env, _ in seeds]
  np.testing.assert_array_equal(
      [env.reset().observation
       for env in loop._environments],  # pylint: disable=protected-access
      np.stack(first))
  np.testing.assert_array_equal(
      np.asarray(loop._actor._keys),  # pylint: disable=protected-access
      np.stack([np.asarray(jax.random.PRNGKey(p)) for _, p in seeds]))


@pytest.mark.parametrize('run_kwargs, actor_index, cuts', [
    # Actor a's environment e is number e * A + a of A * E = 4, spread over
    # cartpole's 1000-step episode.
    (dict(num_actors=2), 0, [0, 500]),
    (dict(num_actors=2), 1, [250, 750]),
    (dict(num_actors=2, single_process=True), 0, [0, 500]),  # one actor
    (dict(num_actors=2, stagger_starts=False), 1, [0, 0]),
])
def test_actor_loops_stagger_first_episodes_over_the_run(run_kwargs,
                                                         actor_index, cuts):
  from wpo_agent import builder as builder_lib  # pylint: disable=g-import-not-at-top
  run = runs.RunOptions(domain='cartpole', envs_per_actor=2, **run_kwargs)
  loop = builder_lib.Builder(config_lib.make_config('small'), run).actor_loop(
      acting.StaticVariableSource(), actor_index=actor_index,
      start_actor_steps=0, writer=None)
  assert list(loop._cuts) == cuts  # pylint: disable=protected-access
