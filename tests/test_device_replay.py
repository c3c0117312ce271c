"""The device replay (device_replay.py, device_feed.py): sampling, ring,
ratio, checkpoints, rechunking, and the learner step that samples inside jit
(docs/architecture.md)."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import device_feed
from wpo_agent import device_replay
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent import sharding
from wpo_agent import types
from wpo_agent.types import Batch

import tiny
import two_devices

OBS, ACT = 3, 2


def _item():
  return Batch(np.zeros(OBS, np.float32), np.zeros(ACT, np.float32),
               np.zeros((), np.float32), np.zeros((), np.float32),
               np.zeros(OBS, np.float32))


def _chunk(first: int, size: int) -> Batch:
  """Items whose every field encodes their id (first, first+1, ...)."""
  ids = np.arange(first, first + size, dtype=np.float32)
  return Batch(np.repeat(ids[:, None], OBS, 1), np.repeat(ids[:, None], ACT, 1),
               ids, ids / 1e6, np.repeat(ids[:, None], OBS, 1) + 0.5)


def _replay(capacity, batch_size=64):
  return device_replay.DeviceReplay(_item(), capacity=capacity,
                                    batch_size=batch_size,
                                    mesh=sharding.make_mesh())


def _fill(replay, state, chunks, first=0):
  for i in range(chunks):
    state = replay.add(state, _chunk(first + i * replay.chunk_size,
                                     replay.chunk_size))
  return state


def _all_ids(replay, state):
  """Ids in the buffer's slots (not its write padding)."""
  return np.asarray(state.data.reward)[:, :replay.slots].ravel()


def test_uniform_sampling_chi_square():
  replay = _replay(capacity=512, batch_size=64)
  state = _fill(replay, replay.init(), 3)  # 384 of 512 slots
  sample = jax.jit(replay.sample)
  counts = np.zeros(512)
  for i in range(600):  # 38,400 draws, ~100 per item
    ids = np.asarray(sample(state, jax.random.PRNGKey(i)).reward).astype(int)
    # Every field of a drawn item belongs to that item.
    batch = sample(state, jax.random.PRNGKey(i))
    np.testing.assert_array_equal(np.asarray(batch.observation[:, 0]),
                                  np.asarray(batch.reward))
    counts += np.bincount(ids, minlength=512)
  assert counts[384:].sum() == 0  # never an empty slot
  p = stats.chisquare(counts[:384]).pvalue
  assert p > 1e-3, p


def test_ring_wraps_and_keeps_the_newest():
  # 320 slots, chunks of 128: the third chunk crosses the end, 64 items
  # before it and 64 into slots 0..63 (over the oldest items).
  replay = _replay(capacity=320)
  chunk = replay.chunk_size
  state = _fill(replay, replay.init(), 2)
  assert replay.size(state) == 2 * chunk
  state = _fill(replay, state, 1, first=2 * chunk)
  assert replay.size(state) == 320
  slots = _all_ids(replay, state)
  np.testing.assert_array_equal(slots[:64], np.arange(320, 384))
  np.testing.assert_array_equal(slots[64:], np.arange(64, 320))
  drawn = np.asarray(jax.jit(replay.sample)(state, jax.random.PRNGKey(0))
                     .reward)
  assert drawn.min() >= 64
  state = _fill(replay, state, 1, first=3 * chunk)  # next: slots 64..191
  slots = _all_ids(replay, state)
  np.testing.assert_array_equal(slots[:192], np.arange(320, 512))
  np.testing.assert_array_equal(slots[192:], np.arange(192, 320))


def _feed(samples_per_insert, min_size, chunks, batch_size=64, k=1):
  replay = _replay(capacity=4096, batch_size=batch_size)
  source = (_chunk(i * replay.chunk_size, replay.chunk_size)
            for i in range(chunks))
  return device_feed.DeviceFeed(
      replay, source, samples_per_insert=samples_per_insert,
      keep_ratio=True, sgd_steps_per_call=k, min_size=min_size)


def test_feed_keeps_samples_per_insert():
  # spi 2, B 64, K 2: one call costs 128 samples = 64 inserts after min_size
  # (256 items = 2 chunks); each further chunk of 128 pays for 2 calls.
  feed = _feed(samples_per_insert=2.0, min_size=256, chunks=20, k=2)
  calls = 0
  for _ in range(10):
    feed.wait_until_owed()
    feed.called()
    calls += 1
    inserted = feed.inserted
    # Never more samples than the ratio allows, and no chunk drained early:
    # without the last chunk the calls made so far were not yet paid for.
    assert calls * 128 <= 2.0 * (inserted - 256)
    assert (calls - 1) * 128 > 2.0 * (inserted - 128 - 256) - 1e-9
  assert feed.inserted == 256 + 5 * 128
  assert feed.realised_samples_per_insert() == pytest.approx(2.0)


def test_feed_stops_draining_when_the_learner_is_behind():
  # The drain thread holds at most `queue_chunks` chunks (+ the one it is
  # putting); the rest stay with the producer, i.e. in the transport table.
  consumed = []
  replay = _replay(capacity=4096)

  def source():
    for i in range(50):
      consumed.append(i)
      yield _chunk(i * replay.chunk_size, replay.chunk_size)

  feed = device_feed.DeviceFeed(replay, source(), samples_per_insert=1.0,
                                keep_ratio=True, sgd_steps_per_call=1,
                                min_size=128)
  feed.wait_until_owed()  # 2 chunks: min_size, then one that pays 2 calls
  threading.Event().wait(0.5)  # give the drain thread time to run ahead
  assert feed.inserted == 256
  assert len(consumed) <= 2 + 2 + 1


def test_feed_without_ratio_drains_what_has_arrived():
  # rate_limiter='min_size': no ratio; each call first adds every chunk the
  # drain holds, so the actors are never held back by the learner.
  replay = _replay(capacity=4096)
  feed = device_feed.DeviceFeed(
      replay, (_chunk(i * 128, 128) for i in range(6)),
      samples_per_insert=1.0, keep_ratio=False, sgd_steps_per_call=1,
      min_size=128)
  for _ in range(20):
    feed.wait_until_owed()
    feed.called()
    threading.Event().wait(0.05)
  assert feed.inserted == 6 * 128
  assert feed.gate.calls == 20  # 20 calls on 640 items past min_size: no wait


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
  for chunks in (3, 5):  # partly filled, then wrapped across the end
    replay = _replay(capacity=448)
    state = _fill(replay, replay.init(), chunks)
    checkpointer = checkpointing.Checkpointer(str(tmp_path / str(chunks)))
    saved = replay.to_host(state)
    filled = saved['data'][0].shape[1]
    checkpointer.save(7, {'x': np.zeros(2)}, {'filled': filled},
                      replay=saved)
    loaded = checkpointer.restore_replay(replay.saved_like(filled))
    restored = replay.from_host(loaded)
    for a, b in zip(jax.tree.leaves(replay.to_host(state)),
                    jax.tree.leaves(replay.to_host(restored))):
      assert a.dtype == b.dtype and a.shape == b.shape
      np.testing.assert_array_equal(a, b)
    assert filled == min(chunks * replay.chunk_size, 448)
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(replay.sample(state, key).reward,
                                  replay.sample(restored, key).reward)
    # And both continue identically.
    a = _fill(replay, state, 1, first=10_000)
    b = _fill(replay, restored, 1, first=10_000)
    np.testing.assert_array_equal(_all_ids(replay, a), _all_ids(replay, b))
    checkpointer.close()


def test_rechunk():
  batches = [types.Batch(*(np.arange(m * 5 * 4).reshape(m, 5, 4) + 1000 * i
                           if f in ('observation', 'action',
                                    'next_observation')
                           else np.arange(m * 5).reshape(m, 5) + 1000 * i
                           for f in types.Batch._fields))
             for i, m in enumerate((1, 3, 2))]
  out = list(device_replay.rechunk(iter(batches), 7))
  assert len(out) == 4  # 30 rows: 4 chunks of 7, 2 held back
  rewards = np.concatenate([b.reward.reshape(-1) for b in batches])
  np.testing.assert_array_equal(np.concatenate([c.reward for c in out]),
                                rewards[:28])
  assert all(c.observation.shape == (7, 4) for c in out)
  np.testing.assert_array_equal(
      out[-1].observation,
      np.concatenate([b.observation.reshape(-1, 4) for b in batches])[21:28])


def _tiny():
  cfg = tiny.config(target_update_period=2, sgd_steps_per_learner_step=3)
  nets = networks_lib.make_networks(OBS, -np.ones(ACT), np.ones(ACT),
                                    **cfg.network_kwargs())
  return cfg, nets


def test_in_jit_sampling_equals_the_same_steps_fed_from_outside():
  cfg, nets = _tiny()
  replay = _replay(capacity=512, batch_size=cfg.batch_size)
  rng = np.random.default_rng(0)
  state = replay.init()
  for _ in range(3):
    chunk = Batch(*(rng.normal(size=(replay.chunk_size,) + x.shape)
                    .astype(np.float32) for x in _item()))
    state = replay.add(state, chunk)
  step, _, _ = sharding.make_sampling_learner_step(
      nets, cfg, sharding.make_mesh(), replay)
  fused, _ = step(learning.init_training_state(nets, cfg,
                                               jax.random.PRNGKey(1)), state)
  # Outside: draw each batch with the same key, then the plain SGD step.
  sgd = jax.jit(learning.make_sgd_step(nets, cfg))
  sample = jax.jit(replay.sample)
  outside = learning.init_training_state(nets, cfg, jax.random.PRNGKey(1))
  for _ in range(cfg.sgd_steps_per_learner_step):
    outside, _ = sgd(outside, sample(state, learning.sample_key(outside.key)))
  assert int(fused.steps) == int(outside.steps) == 3
  np.testing.assert_array_equal(fused.key, outside.key)
  for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(outside)):
    np.testing.assert_allclose(np.asarray(a, np.float32),
                               np.asarray(b, np.float32), rtol=1e-5,
                               atol=1e-6)
  moved = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), fused.policy_params,
      learning.init_training_state(nets, cfg,
                                   jax.random.PRNGKey(1)).policy_params))
  assert max(moved) > 1e-4


_SHARDED = r'''
import jax, jax.numpy as jnp, numpy as np
from wpo_agent import config as C, networks as N, learning as L, sharding as S
from wpo_agent import device_replay as DR
from wpo_agent.types import Batch
assert len(jax.devices()) == 2, jax.devices()
cfg = C.make_config('small', policy_layer_sizes=(16, 16),
                    critic_layer_sizes=(16, 16), batch_size=32,
                    num_action_samples=4, target_update_period=2,
                    sgd_steps_per_learner_step=2)
nets = N.make_networks(3, -np.ones(2), np.ones(2), **cfg.network_kwargs())
item = Batch(np.zeros(3, np.float32), np.zeros(2, np.float32),
             np.zeros((), np.float32), np.zeros((), np.float32),
             np.zeros(3, np.float32))
mesh = S.make_mesh()
replay = DR.DeviceReplay(item, capacity=512, batch_size=32, mesh=mesh)
rng = np.random.default_rng(0)
state = replay.init()
for _ in range(3):
  state = replay.add(state, Batch(*(rng.normal(
      size=(replay.chunk_size,) + x.shape).astype(np.float32) for x in item)))
# Each device holds half the items (its own shard) ...
leaf = state.data.reward
assert leaf.sharding.shard_shape(leaf.shape)[0] == 1
assert len(leaf.sharding.device_set) == 2
step, _, _ = S.make_sampling_learner_step(nets, cfg, mesh, replay)
s2, _ = step(L.init_training_state(nets, cfg, jax.random.PRNGKey(0)), state)
# ... and the 2-device step equals one device fed the same batches whole.
sgd = jax.jit(L.make_sgd_step(nets, cfg))
sample = jax.jit(replay.sample)
s1 = L.init_training_state(nets, cfg, jax.random.PRNGKey(0))
for _ in range(2):
  key = jax.device_put(L.sample_key(s1.key),
                       jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  batch = jax.device_get(sample(state, key))
  batch = jax.device_put(batch, jax.devices()[0])
  s1, _ = sgd(s1, batch)
diffs = jax.tree.leaves(jax.tree.map(
    lambda a, b: float(np.max(np.abs(np.asarray(a, np.float32) -
                                     np.asarray(b, np.float32)))),
    jax.device_get(s1), jax.device_get(s2)))
assert max(diffs) < 1e-5, max(diffs)
print('OK', max(diffs))
'''


def test_sharded_sampling_step_matches_single_device():
  two_devices.run(_SHARDED)


def test_unknown_backend_lists_the_valid_ones():
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.make_config('small', replay_backend='gpu')
  assert str(e.value) == ("replay_backend='gpu': allowed values are "
                          "['device', 'reverb']")


def test_buffer_too_large_is_refused_with_what_to_lower():
  free = 1 << 30  # 1 GiB free
  item_bytes = device_replay.item_bytes(_item())  # 4 * (3 + 2 + 1 + 1 + 3)
  assert item_bytes == 40
  with pytest.raises(device_replay.BufferTooLargeError) as e:
    device_replay.check_fits(_item(), capacity=100_000_000, num_devices=2,
                             free_bytes=free, platform='gpu')
  fits = int(0.8 * free // 40) * 2
  assert f'lower max_replay_size to at most {fits}' in str(e.value)
  assert '1.86 GiB on each of the 2 gpu device(s)' in str(e.value)
  device_replay.check_fits(_item(), capacity=fits, num_devices=2,
                           free_bytes=free, platform='gpu')  # fits: no error
  with pytest.raises(device_replay.BufferTooLargeError):
    _replay(capacity=10**12)  # this host's real free memory


def _train_cartpole(workdir, steps, **run_options):
  """A tiny single-process cartpole run on the device replay (spi = B)."""
  from wpo_agent import runs, single_process  # pylint: disable=g-import-not-at-top
  config = tiny.config(min_replay_size=128, max_replay_size=4096,
                       samples_per_insert=32.0, variable_update_period=100,
                       replay_backend='device')
  return single_process.train(runs.RunOptions(
      domain='cartpole', task='swingup', workdir=str(workdir),
      max_actor_steps=steps, eval_episodes=1, progress_every_s=1e9,
      checkpoint_every_s=1e9, tensorboard=False, quiet=True, **run_options),
                              config)


@pytest.mark.slow  # a real training run
def test_single_process_run_resumes_with_its_device_buffer(tmp_path):
  import csv  # pylint: disable=g-import-not-at-top

  def run(steps):
    return _train_cartpole(tmp_path, steps, eval_every=400)

  def rows():
    with open(tmp_path / 'train.csv', newline='') as f:
      return list(csv.DictReader(f))

  first = run(800)
  meta = checkpointing.Checkpointer(str(tmp_path)).latest_metadata()
  saved = meta['device_replay_filled_per_shard']
  # Whole chunks drained; spi = B: one call per drained item past min_size.
  # The save itself adds the chunks already drained (up to 2) untrained.
  assert saved % 128 == 0 and 256 <= saved <= 800
  assert first['learner_steps'] % 128 == 0
  assert saved - 3 * 128 <= first['learner_steps'] <= saved - 128
  assert int(rows()[-1]['replay_items']) <= saved
  before = len(rows())
  second = run(1600)
  resumed = [int(r['replay_items']) for r in rows()[before:]]
  # The buffer came back (no refill from zero) and learning went on at once:
  # every drained item pays for one call, with no second warm-up.
  assert resumed[0] > saved
  meta = checkpointing.Checkpointer(str(tmp_path)).latest_metadata()
  grown = meta['device_replay_filled_per_shard']
  trained = second['learner_steps'] - first['learner_steps']
  assert trained % 128 == 0
  assert grown - saved - 2 * 128 <= trained <= grown - saved


@pytest.mark.slow  # a real training run
def test_a_run_stopped_before_its_first_chunk_saves_and_resumes(tmp_path):
  """Fewer transitions than one insert chunk: the buffer is empty at the
  save (orbax refuses zero-size arrays), so none is saved; the resume fills
  it from the start."""

  def run(steps):
    return _train_cartpole(tmp_path, steps, eval_every=10_000,
                           envs_per_actor=4)

  assert run(64)['actor_steps'] == 64
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  assert checkpointer.latest_step() == 64
  assert 'device_replay_filled_per_shard' not in checkpointer.latest_metadata()
  checkpointer.close()
  second = run(800)
  assert second['actor_steps'] == 800 and second['learner_steps'] > 0
