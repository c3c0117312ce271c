"""sharding.py: the data-parallel learner step (and WPOLearner on 2 devices)
equals the single-device step.

Runs in a subprocess: the number of host CPU devices is fixed when jax starts
(XLA_FLAGS=--xla_force_host_platform_device_count=2).
"""

import pytest

import two_devices

_SCRIPT = r'''
import jax, jax.numpy as jnp, numpy as np
from wpo_agent import config as C, networks as N, learning as L, sharding as S
from wpo_agent import learner as LR
from wpo_agent.types import Batch
assert len(jax.devices()) == 2, jax.devices()
cfg = C.make_config('small', policy_layer_sizes=(16, 16),
                    critic_layer_sizes=(16, 16), batch_size=8,
                    num_action_samples=4, target_update_period=2)
nets = N.make_networks(3, -np.ones(2), np.ones(2), **cfg.network_kwargs())
rng = np.random.default_rng(0)
shapes = [(3,), (2,), (), (), (3,)]
batches = Batch(*(rng.normal(size=(3, 1, 8) + s).astype(np.float32)
                  for s in shapes))
plain = jax.jit(L.make_learner_step(nets, cfg))
step, replicated, batch_sharding = S.make_sharded_learner_step(
    nets, cfg, S.make_mesh())
s1 = L.init_training_state(nets, cfg, jax.random.PRNGKey(0))
s2 = jax.device_put(L.init_training_state(nets, cfg, jax.random.PRNGKey(0)),
                    replicated)
for i in range(3):
  b = jax.tree.map(lambda x: x[i], batches)
  s1, _ = plain(s1, b)
  b2 = jax.device_put(b, batch_sharding)
  assert len(b2.observation.sharding.device_set) == 2
  s2, _ = step(s2, b2)
diffs = jax.tree.leaves(jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) -
                                       jnp.asarray(b, jnp.float32)))), s1, s2))
assert int(s2.steps) == 3
assert max(diffs) < 1e-5, max(diffs)
# The policy actually moved, so the comparison is not vacuous.
moved = jax.tree.leaves(jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(a - b))), s2.policy_params,
    L.init_training_state(nets, cfg, jax.random.PRNGKey(0)).policy_params))
assert max(moved) > 1e-4, max(moved)
# The learner runs the sharded step over the mesh it is given.
learner = LR.WPOLearner(nets, cfg, iter([jax.tree.map(lambda x: x[i], batches)
                                         for i in range(3)]),
                        jax.random.PRNGKey(0), mesh=S.make_mesh(), logger=None)
for _ in range(3):
  learner.step()
leaf = jax.tree.leaves(learner.state.policy_params)[0]
assert len(leaf.sharding.device_set) == 2  # replicated over both devices
diffs = jax.tree.leaves(jax.tree.map(
    lambda a, b: float(np.max(np.abs(np.asarray(a, np.float32) -
                                     np.asarray(b, np.float32)))),
    jax.device_get(s1), learner.save()))
assert max(diffs) < 1e-5, max(diffs)
print('OK', max(diffs))
'''


def test_sharded_step_matches_single_device():
  two_devices.run(_SCRIPT)


def test_batch_must_divide_over_devices():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from wpo_agent import config as C, networks as N, sharding as S  # pylint: disable=g-import-not-at-top
  cfg = C.make_config('small', batch_size=3, policy_layer_sizes=(8,),
                      critic_layer_sizes=(8,))
  nets = N.make_networks(3, -np.ones(2), np.ones(2), **cfg.network_kwargs())
  mesh = S.make_mesh([jax.devices()[0]] * 2)
  with pytest.raises(ValueError, match='not divisible'):
    S.make_sharded_learner_step(nets, cfg, mesh)
