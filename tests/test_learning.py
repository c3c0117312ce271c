"""The learner's SGD step (learning.py) and WPOLearner (learner.py) on fake data.

Tiny networks (obs 4, action 2, layers (32, 32)), batch 64, N = 8 samples.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wpo_agent import config as config_lib
from wpo_agent import device_feed
from wpo_agent import device_replay
from wpo_agent import distributions as dists
from wpo_agent import learner as learner_lib
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent import sharding
from wpo_agent import train_metrics
from wpo_agent.types import Batch

OBS, ACT, BATCH = 4, 2, 64


def make_config(**overrides):
  kwargs = dict(policy_layer_sizes=(32, 32), critic_layer_sizes=(32, 32),
                batch_size=BATCH, num_action_samples=8,
                target_update_period=3, critic_learning_rate=3e-3)
  kwargs.update(overrides)
  return config_lib.make_config('small', **kwargs)


def make_networks(config):
  return networks_lib.make_networks(OBS, [-1.0] * ACT, [1.0] * ACT,
                                    **config.network_kwargs())


def reward_fn(obs, action):
  """A smooth known reward of (s, a), mean ~0: fitting it needs Q(s, a)."""
  return (np.tanh(obs[:, 0]) + obs[:, 1] * action[:, 0]
          - (action[:, 1] ** 2 - 1 / 3)).astype(np.float32)


def fake_dataset(size, seed=0, discount=0.0):
  """Fixed transitions with reward = reward_fn(s, a) and a constant discount."""
  rng = np.random.default_rng(seed)
  obs = rng.normal(size=(size, OBS)).astype(np.float32)
  act = rng.uniform(-1, 1, size=(size, ACT)).astype(np.float32)
  return Batch(observation=obs, action=act, reward=reward_fn(obs, act),
               discount=np.full((size,), discount, np.float32),
               next_observation=rng.normal(size=(size, OBS)).astype(np.float32))


def batches(data, num, seed=1, batch_size=BATCH):
  """`num` minibatches [B] drawn uniformly from `data`."""
  rng = np.random.default_rng(seed)
  size = data.observation.shape[0]
  for _ in range(num):
    idx = rng.integers(0, size, batch_size)
    yield jax.tree.map(lambda x: x[idx], data)


def stack(batch_list):
  return jax.tree.map(lambda *xs: np.stack(xs), *batch_list)


def critic_loss_on(networks, critic_params, data):
  """0.5 * mean (reward - Q)^2: the TD loss when discount is 0."""
  q = networks.critic.apply(critic_params, data.observation, data.action)
  return float(0.5 * jnp.mean(jnp.square(data.reward - q)))


def leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def no_leaf_equal(a, b):
  return not any(np.array_equal(x, y) for x, y in
                 zip(jax.tree.leaves(a), jax.tree.leaves(b)))


_STEPS = {}


def jitted_step(config):
  """jit(sgd_step) for `config`, compiled once per config for the whole module."""
  config = config.replace(sgd_steps_per_learner_step=1)  # unused by sgd_step
  if config not in _STEPS:
    networks = make_networks(config)
    _STEPS[config] = (networks,
                      jax.jit(learning.make_sgd_step(networks, config)))
  return _STEPS[config]


def setup(config, seed=0):
  networks, step = jitted_step(config)
  state = learning.init_training_state(networks, config,
                                       jax.random.PRNGKey(seed))
  return networks, state, step


class ListLogger:

  def __init__(self):
    self.rows = []

  def write(self, row):
    self.rows.append(dict(row))


def assert_finite(metrics):
  for name, value in metrics.items():
    assert np.all(np.isfinite(np.asarray(value))), (name, value)


FAMILIES = {'gaussian': dict(),
            'mixture': dict(policy_family='mixture', num_components=3)}


@pytest.mark.parametrize('family,steps,factor', [('gaussian', 200, 0.2),
                                                 ('mixture', 150, 0.5)])
def test_critic_td_loss_drops_on_fake_data(family, steps, factor):
  """discount 0: the TD target is the reward, a fixed regression problem."""
  config = make_config(**FAMILIES[family])
  networks, state, step = setup(config)
  data = fake_dataset(2048)
  initial = critic_loss_on(networks, state.critic_params, data)
  assert initial > 0.3  # a target well away from Q ~ 0 at init
  first = last = None
  for batch in batches(data, steps):
    state, metrics = step(state, batch)
    assert_finite(metrics)
    first = float(metrics['critic_loss']) if first is None else first
    last = float(metrics['critic_loss'])
  final = critic_loss_on(networks, state.critic_params, data)
  assert final < factor * initial, (initial, final)
  assert last < factor * first, (first, last)
  assert int(state.steps) == steps
  # With discount 0 the target is exactly the reward.
  np.testing.assert_allclose(float(metrics['td_target_mean']),
                             float(np.mean(batch.reward)), rtol=1e-5,
                             atol=1e-6)


def test_target_networks_copied_exactly_every_period():
  period = 3
  config = make_config(target_update_period=period)
  _, state, step = setup(config)
  data = fake_dataset(512, discount=0.9)
  initial_target_policy = state.target_policy_params
  assert leaves_equal(state.target_policy_params, state.policy_params)
  for t, batch in enumerate(batches(data, 3 * period + 2), start=1):
    new, _ = step(state, batch)
    assert int(new.steps) == t
    # Online parameters move on every step.
    assert no_leaf_equal(new.policy_params, state.policy_params)
    assert no_leaf_equal(new.critic_params, state.critic_params)
    if t % period == 0:
      assert leaves_equal(new.target_policy_params, new.policy_params)
      assert leaves_equal(new.target_critic_params, new.critic_params)
    else:
      assert leaves_equal(new.target_policy_params, state.target_policy_params)
      assert leaves_equal(new.target_critic_params, state.target_critic_params)
      assert no_leaf_equal(new.target_policy_params, new.policy_params)
      assert no_leaf_equal(new.target_critic_params, new.critic_params)
    if t < period:
      assert leaves_equal(new.target_policy_params, initial_target_policy)
    state = new


def test_fused_steps_equal_sequential_steps():
  """WPOLearner with K = 4 (make_learner_step on [4, B] batches, lax.scan)."""
  k = 4
  config = make_config(sgd_steps_per_learner_step=k)  # copies at steps 3, 6
  networks, state0, step = setup(config)
  data = fake_dataset(512, discount=0.9)
  batch_list = list(batches(data, 2 * k))
  logger = ListLogger()
  learner = learner_lib.WPOLearner(
      networks, config, iter([stack(batch_list[:k]), stack(batch_list[k:])]),
      jax.random.PRNGKey(0), mesh=one_device_mesh(), logger=logger,
      log_every=2)
  assert leaves_equal(learner.save(), state0)  # same init as setup()
  learner.step()
  assert learner.sgd_steps == int(learner.state.steps) == k
  metrics_fused = learner.step()
  state_fused = learner.save()

  state_seq = state0
  seq_metrics = []
  for batch in batch_list:
    state_seq, metrics = step(state_seq, batch)
    seq_metrics.append(metrics)

  assert learner.sgd_steps == int(state_fused.steps) == int(state_seq.steps)
  np.testing.assert_array_equal(state_fused.key, state_seq.key)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  jax.tree.map(close, state_fused, state_seq)
  # Metrics are the mean over the call's K steps (here steps 5-8).
  for name, value in metrics_fused.items():
    close(value, np.mean([m[name] for m in seq_metrics[k:]]), err_msg=name)
  assert [row['learner_steps'] for row in logger.rows] == [2 * k]
  # The served policy is the target copied at step 6, not the online one.
  [served] = learner.get_variables(['policy'])
  assert leaves_equal(served, state_fused.target_policy_params)
  assert no_leaf_equal(served, state_fused.policy_params)


def test_chunked_action_gradient_gives_the_same_steps():
  """action_samples_per_chunk is speed only: 1, 2 and all 8 give the same state."""
  data = fake_dataset(512, discount=0.9)
  batch_list = list(batches(data, 3))
  finals = []
  for chunk in (8, 2, 1):
    config = make_config(action_samples_per_chunk=chunk)
    _, state, step = setup(config)
    for batch in batch_list:
      state, _ = step(state, batch)
    finals.append(state)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  for other in finals[1:]:
    jax.tree.map(close, other, finals[0])
  # Three steps moved the policy, so the comparison is not of untouched params.
  assert no_leaf_equal(finals[0].policy_params, setup(make_config())[1].policy_params)


HARD = dict(kl_constraint='hard', weight_decay=1e-4)


def test_hard_kl_learns_duals():
  config = make_config(**HARD)
  _, state, step = setup(config)
  init_duals = state.dual_params
  init_dual_opt = state.dual_opt_state
  for batch in batches(fake_dataset(512, discount=0.9), 5):
    state, metrics = step(state, batch)
    assert_finite(metrics)
  assert no_leaf_equal(state.dual_params, init_duals)
  assert not leaves_equal(state.dual_opt_state, init_dual_opt)


def test_soft_kl_keeps_duals_at_init():
  config = make_config(kl_constraint='soft')
  _, state, step = setup(config)
  init_duals = state.dual_params
  init_dual_opt = state.dual_opt_state
  for batch in batches(fake_dataset(512, discount=0.9), 5):
    state, metrics = step(state, batch)
    assert_finite(metrics)
  assert leaves_equal(state.dual_params, init_duals)
  assert leaves_equal(state.dual_opt_state, init_dual_opt)
  np.testing.assert_allclose(float(metrics['alpha_mean']),
                             float(jax.nn.softplus(0.0)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['alpha_stddev']), 1e4, rtol=1e-5)


def test_fresh_keys_every_step():
  config = make_config()
  _, state0, step = setup(config)
  batch = next(batches(fake_dataset(512, discount=0.9), 1))
  state1, metrics1 = step(state0, batch)
  state2, _ = step(state1, batch)
  assert not np.array_equal(state0.key, state1.key)
  assert not np.array_equal(state1.key, state2.key)
  # Same parameters and batch, different key only: the sample-dependent
  # quantities differ, so the step did not reuse the previous samples.
  rekeyed, metrics_rekeyed = step(state0._replace(key=state1.key), batch)
  for name in ('wpo_loss', 'dq_da_abs_mean', 'td_target_mean'):
    assert float(metrics1[name]) != float(metrics_rekeyed[name]), name
  assert not leaves_equal(rekeyed.policy_params, state1.policy_params)
  # ... and the step is a pure function of (state, batch).
  again, metrics_again = step(state0, batch)
  assert leaves_equal(again, state1)
  assert float(metrics_again['wpo_loss']) == float(metrics1['wpo_loss'])


@pytest.mark.parametrize('overrides', [
    FAMILIES['gaussian'],
    FAMILIES['mixture'],
    dict(bootstrap_aggregate='max', dq_da_squash='cbrt',
         use_natural_gradient=False, policy_loss_on_next_obs=True),
    HARD,
], ids=['gaussian', 'mixture', 'max-cbrt-plain-next-obs', 'hard-adamw'])
def test_metrics_finite(overrides):
  config = make_config(**overrides)
  _, state, step = setup(config)
  for batch in batches(fake_dataset(512, discount=0.9), 3):
    state, metrics = step(state, batch)
  assert_finite(metrics)
  assert_finite({'leaf': np.concatenate(
      [np.ravel(x) for x in jax.tree.leaves(state)
       if jnp.issubdtype(np.asarray(x).dtype, jnp.floating)])})
  expected = {'critic_loss', 'policy_loss', 'wpo_loss', 'kl_loss', 'dual_loss',
              'kl_mean', 'kl_stddev', 'alpha_mean', 'alpha_stddev', 'q_mean',
              'sigma_min', 'dq_da_abs_mean', 'policy_grad_norm',
              'critic_grad_norm'}
  assert expected <= set(metrics)
  mixture_keys = {k for k in metrics if k.startswith('mix_')}
  if overrides.get('policy_family') == 'mixture':
    assert len(mixture_keys) == 2 * config.num_components + 2
  else:
    assert not mixture_keys


def test_mixture_metrics_hand_computed():
  # Two states, K = 2, D = 2: weights (1/4, 3/4) and (3/4, 1/4).
  third = np.log(3.0)
  pi = dists.MixtureOfGaussians(
      logits=jnp.array([[0.0, third], [third, 0.0]]),
      loc=jnp.array([[[0., 0.], [2., 4.]], [[1., 1.], [1., 1.]]]),
      scale=jnp.array([[[1., 3.], [0.5, 0.5]], [[1., 1.], [2., 4.]]]))
  m = {k: float(v) for k, v in train_metrics.mixture_metrics(pi).items()}
  entropy = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
  np.testing.assert_allclose(
      [m['mix_weight_0'], m['mix_weight_1'], m['mix_scale_0'],
       m['mix_scale_1'], m['mix_effective_k'], m['mix_loc_spread']],
      # loc spreads: std over components of (0, 2), (0, 4), (1, 1), (1, 1)
      [0.5, 0.5, (1 + 3 + 1 + 1) / 4, (0.5 + 0.5 + 2 + 4) / 4,
       np.exp(entropy), (1 + 2 + 0 + 0) / 4],
      rtol=1e-6)
  assert train_metrics.mixture_metrics(dists.Gaussian(pi.loc, pi.scale)) == {}


# --- WPOLearner -------------------------------------------------------------


def one_device_mesh():
  return sharding.make_mesh(jax.local_devices()[:1])


def batch_iterator(k, seed=0):
  """[K, B] batches, as the replay dataset yields them (also for K = 1)."""
  data = fake_dataset(512, discount=0.9, seed=seed)
  it = batches(data, 10**6)
  while True:
    yield stack([next(it) for _ in range(k)])


def test_wpo_learner_k1():
  """step(), logging, the served TARGET policy, unknown names, save/restore."""
  config = make_config()  # K = 1, target_update_period = 3
  networks = make_networks(config)
  logger = ListLogger()
  learner = learner_lib.WPOLearner(networks, config, batch_iterator(1),
                                   jax.random.PRNGKey(0),
                                   mesh=one_device_mesh(), logger=logger,
                                   log_every=2)
  assert learner.sgd_steps == 0
  initial = jax.device_get(learner.state.policy_params)
  [served] = learner.get_variables(['policy'])
  assert leaves_equal(served, initial)
  for step in range(1, 8):
    metrics = learner.step()
    assert_finite(metrics)
    state = learner.state
    assert learner.sgd_steps == int(state.steps) == step
    [served] = learner.get_variables(['policy'])
    assert leaves_equal(served, state.target_policy_params)
    if step % 3 == 0:
      assert leaves_equal(served, state.policy_params)
    else:
      assert no_leaf_equal(served, state.policy_params)
    if step < 3:
      assert leaves_equal(served, initial)
  assert [row['learner_steps'] for row in logger.rows] == [2, 4, 6]
  assert all(np.isfinite(row['critic_loss']) for row in logger.rows)

  with pytest.raises(ValueError, match='value_fn'):
    learner.get_variables(['value_fn'])

  # save/restore into a learner with other params (and a stale served copy).
  other = learner_lib.WPOLearner(networks, config, batch_iterator(1),
                                 jax.random.PRNGKey(1),
                                 mesh=one_device_mesh(), logger=None)
  assert not leaves_equal(other.get_variables(['policy'])[0], served)
  saved = learner.save()
  other.restore(saved)
  assert other.sgd_steps == 7
  assert leaves_equal(other.save(), saved)
  assert leaves_equal(other.get_variables(['policy'])[0], served)


_COMPILES = []  # one entry per XLA compilation, once the listener is on


def _count_compile(event, duration, **kwargs):
  del duration, kwargs
  if event == '/jax/core/compile/backend_compile_duration':
    _COMPILES.append(event)


def _backend_compiles(fn):
  """How many XLA compilations `fn()` triggers (jax.monitoring has no public
  unregister: the listener, registered once, only appends to a list)."""
  if not _COMPILES:
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    _COMPILES.append('registered')
  before = len(_COMPILES)
  fn()
  return len(_COMPILES) - before


def _device_feed(config):
  data = fake_dataset(device_replay.INSERT_CHUNK, discount=0.9)
  replay = device_replay.DeviceReplay(
      jax.tree.map(lambda x: x[0], data), capacity=1024,
      batch_size=config.batch_size, mesh=one_device_mesh())
  return device_feed.DeviceFeed(
      replay, iter([data] * 4), samples_per_insert=1.0, keep_ratio=False,
      sgd_steps_per_call=config.sgd_steps_per_learner_step,
      min_size=device_replay.INSERT_CHUNK)


@pytest.mark.parametrize('backend', ['reverb', 'device'])
@pytest.mark.parametrize('compile_first', [True, False])
def test_compile_leaves_no_compilation_to_the_first_step(backend,
                                                         compile_first):
  """The distributed learner compiles before it serves parameters; its first
  step must then reuse that executable (and, as a control, compiles without)."""
  # A shape no other test uses: nothing compiled earlier in the session hits.
  config = make_config(sgd_steps_per_learner_step=3, batch_size=24)
  source = (_device_feed(config) if backend == 'device'
            else batch_iterator(3, seed=2))
  if backend == 'reverb':
    source = (jax.tree.map(lambda x: x[:, :24], b) for b in source)
  learner = learner_lib.WPOLearner(make_networks(config), config, source,
                                   jax.random.PRNGKey(0),
                                   mesh=one_device_mesh(), logger=None)
  if compile_first:
    learner.compile(jax.tree.map(lambda x: x[0], fake_dataset(1)))
  first_step = _backend_compiles(learner.step)
  assert learner.sgd_steps == 3
  assert (first_step == 0) == compile_first, first_step
