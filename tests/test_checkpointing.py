"""checkpointing.Checkpointer: bit-exact TrainingState round trips and step logic."""

import jax
import numpy as np
import pytest

from wpo_agent import checkpointing
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent.types import Batch
import tiny

OBS, ACT, BATCH = 4, 2, 32


@pytest.fixture(scope='module')
def setup():
  # Hard KL, so that the duals and their Adam state are non-trivial too.
  config = tiny.config(batch_size=BATCH, target_update_period=2,
                       kl_constraint='hard')
  networks = networks_lib.make_networks(OBS, [-1.0] * ACT, [1.0] * ACT,
                                       **config.network_kwargs())
  step = jax.jit(learning.make_sgd_step(networks, config))
  rng = np.random.default_rng(0)

  def batch():
    return Batch(
        observation=rng.normal(size=(BATCH, OBS)).astype(np.float32),
        action=rng.uniform(-1.5, 1.5, size=(BATCH, ACT)).astype(np.float32),
        reward=rng.normal(size=(BATCH,)).astype(np.float32),
        discount=np.full((BATCH,), 0.95, np.float32),
        next_observation=rng.normal(size=(BATCH, OBS)).astype(np.float32))

  state = learning.init_training_state(networks, config,
                                       jax.random.PRNGKey(42))
  for _ in range(3):
    state, _ = step(state, batch())
  return networks, config, step, state, batch


def assert_bit_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for path, x, y in zip(
      [jax.tree_util.keystr(p) for p, _ in
       jax.tree_util.tree_flatten_with_path(a)[0]],
      jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype, path
    assert x.shape == y.shape, path
    assert x.tobytes() == y.tobytes(), path


METADATA = dict(actor_steps=1234, episodes=3, learner_calls=77,
                elapsed_s=12.5, last_eval_return=None, next_eval=2000,
                note='text', nested={'a': [1, 2.5, 'x']})


def test_round_trip_bit_for_bit_and_deterministic(tmp_path, setup):
  networks, config, step, state, batch = setup
  assert int(state.steps) == 3
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() is None
  assert ckpt.restore(state) is None
  ckpt.save(1234, state, METADATA)
  assert ckpt.latest_step() == 1234
  assert ckpt.directory == str(tmp_path / 'checkpoints')
  ckpt.close()

  # A fresh process would restore into a freshly initialised state.
  like = learning.init_training_state(networks, config, jax.random.PRNGKey(0))
  reader = checkpointing.Checkpointer(str(tmp_path))
  restored, metadata = reader.restore(like)
  reader.close()
  assert isinstance(restored, learning.TrainingState)
  assert isinstance(restored.dual_params, learning.DualParams)
  assert_bit_equal(restored, jax.device_get(state))
  assert metadata == METADATA
  assert int(restored.steps) == 3

  # Continuing from the restored state is exactly continuing without a save.
  next_batch = batch()
  continued, metrics = step(state, next_batch)
  resumed, metrics_resumed = step(jax.device_put(restored), next_batch)
  assert_bit_equal(resumed, continued)
  for name in metrics:
    assert float(metrics[name]) == float(metrics_resumed[name]), name


def test_latest_step_and_max_to_keep(tmp_path, setup):
  _, _, step, state, batch = setup
  ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2)
  states = {}
  for actor_steps in (100, 200, 300):
    state, _ = step(state, batch())
    states[actor_steps] = jax.device_get(state)
    ckpt.save(actor_steps, state, dict(actor_steps=actor_steps))
    assert ckpt.latest_step() == actor_steps
  # Saving again at an existing step is a no-op (periodic save then SIGTERM).
  ckpt.save(300, states[100], dict(actor_steps=-1))
  ckpt.close()

  kept = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                if p.name.isdigit())
  assert kept == [200, 300]

  reader = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2)
  assert reader.latest_step() == 300
  restored, metadata = reader.restore(state)
  assert metadata == dict(actor_steps=300)
  assert_bit_equal(restored, states[300])
  restored, metadata = reader.restore(state, step=200)
  assert metadata == dict(actor_steps=200)
  assert_bit_equal(restored, states[200])
  reader.close()
