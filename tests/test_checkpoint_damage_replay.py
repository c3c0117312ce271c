"""Reverb's replay checkpoint and several hosts' checkpoints under damage (the
learner's checkpoints: test_checkpoint_damage.py).

Reverb 0.7.3 by itself fails a server on a truncated replay checkpoint and
starts one silently empty on a missing file; replay.make_checkpointer sets
such a checkpoint aside instead, with one `warning:` line, and the server
starts empty (an empty table's checkpoint is no damage). What that check
cannot see fails the server, and the single-process runner then starts empty
too. A full disk during Reverb's save is one line, its previous checkpoint
intact. Several hosts restore the newest step every host can read (or all
raise the same error); a learner node's checkpoint failure reaches the user
as one line.
"""

import os
import threading

import jax
import numpy as np
import pytest
import reverb
from reverb.platform.default import checkpointers
import tensorflow as tf

from wpo_agent import builder as builder_lib
from wpo_agent import checkpoint_recovery as recovery
from wpo_agent import checkpointing
from wpo_agent import replay
from wpo_agent import replay_checkpoint
from wpo_agent import runs
from wpo_agent import single_process
from wpo_agent.distributed import control as control_lib
from wpo_agent.distributed import hosts
from wpo_agent.distributed import lockstep
from wpo_agent.distributed import supervisor
import small_disk
import tiny


# --- Reverb's replay checkpoint ----------------------------------------------


def _reverb_server(checkpointer):
  table = reverb.Table(
      name='t', sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(), max_size=1000,
      rate_limiter=reverb.rate_limiters.MinSize(1),
      signature=tf.TensorSpec((8,), tf.float32))
  server = reverb.Server([table], port=None, checkpointer=checkpointer)
  return server, reverb.Client(f'localhost:{server.port}')


def _items(client):
  return int(client.server_info()['t'].current_size)


def _replay_checkpoint(workdir, items=50):
  """Reverb's checkpoint of `items` items in `workdir`/replay."""
  server, client = _reverb_server(replay.make_checkpointer(str(workdir)))
  for i in range(items):
    client.insert(np.full((8,), i, np.float32), priorities={'t': 1.0})
  client.checkpoint()
  server.stop()
  (folder,) = os.listdir(workdir / 'replay')
  return workdir / 'replay' / folder


def _reverb_damage(folder, how):
  if how == 'chunks truncated':  # inside its last record
    path = folder / 'chunks.tfrecord'
    os.truncate(path, os.path.getsize(path) - 5)
  elif how == 'chunks deleted':
    os.remove(folder / 'chunks.tfrecord')
  elif how == 'tables emptied':
    os.truncate(folder / 'tables.tfrecord', 0)


@pytest.mark.parametrize('how,reverb_does', [
    ('chunks truncated', 'raises'), ('chunks deleted', 'loads empty'),
    ('tables emptied', 'loads empty')])
def test_damaged_replay_checkpoint_starts_empty_with_one_warning(
    tmp_path, capfd, how, reverb_does):
  folder = _replay_checkpoint(tmp_path)
  _reverb_damage(folder, how)
  # What Reverb 0.7.3 does by itself: fails the server, or silently empty.
  try:
    server, client = _reverb_server(
        checkpointers.DefaultCheckpointer(str(tmp_path / 'replay')))
    assert _items(client) == 0 and reverb_does == 'loads empty'
    server.stop()
  except RuntimeError:
    assert reverb_does == 'raises'
  capfd.readouterr()
  server, client = _reverb_server(replay.make_checkpointer(str(tmp_path)))
  assert _items(client) == 0
  err = capfd.readouterr().err
  warnings = [l for l in err.splitlines() if l.startswith('warning:')]
  assert len(warnings) == 1, err
  assert f"Reverb's replay checkpoint {folder} cannot be loaded" in warnings[0]
  assert 'NOT_LOADABLE' in os.listdir(folder)
  assert 'DONE' not in os.listdir(folder)
  client.checkpoint()  # Reverb deletes the set-aside folder
  assert folder.name not in os.listdir(tmp_path / 'replay')
  server.stop()


def test_empty_replay_checkpoint_is_no_damage(tmp_path, capfd):
  """An empty table (the device backend's drained transport) has no chunk
  records: that loads, without a warning."""
  _replay_checkpoint(tmp_path, items=0)
  full = _replay_checkpoint(tmp_path / 'full')
  capfd.readouterr()
  for workdir, items in ((tmp_path, 0), (tmp_path / 'full', 50)):
    server, client = _reverb_server(replay.make_checkpointer(str(workdir)))
    assert _items(client) == items
    server.stop()
  assert 'warning' not in capfd.readouterr().err
  assert 'DONE' in os.listdir(full)


def test_single_process_replay_starts_empty_when_reverb_raises(tmp_path,
                                                               capfd):
  """Damage the light check cannot see (a corrupted record's data): Reverb
  raises, and the single-process runner sets the folder aside and starts."""
  run = runs.RunOptions(domain='cartpole', task='swingup',
                        workdir=str(tmp_path), single_process=True)
  builder = builder_lib.Builder(tiny.config(replay_backend='reverb'), run)
  make_replay = single_process._Replay  # pylint: disable=protected-access
  in_process = make_replay(builder)
  in_process.checkpoint()
  in_process.close()
  (name,) = os.listdir(tmp_path / 'replay')
  tables = tmp_path / 'replay' / name / 'tables.tfrecord'
  data = bytearray(tables.read_bytes())
  data[20] ^= 0xFF  # inside the first record's data: its CRC fails
  tables.write_bytes(bytes(data))
  capfd.readouterr()
  in_process = make_replay(builder)
  assert in_process.items_at_start == 0
  in_process.close()
  err = capfd.readouterr().err
  warnings = [l for l in err.splitlines() if l.startswith('warning:')]
  assert len(warnings) == 1 and 'corrupted record' in warnings[0], err


def test_replay_disk_full_is_one_line(tmp_path):
  with small_disk.mounted(tmp_path / 'small') as disk:
    if disk is None:
      pytest.skip('no tmpfs (not root)')
    workdir = disk / 'run'
    server, client = _reverb_server(replay.make_checkpointer(str(workdir)))
    client.insert(np.zeros((8,), np.float32), priorities={'t': 1.0})
    client.checkpoint()
    (kept,) = os.listdir(workdir / 'replay')
    small_disk.fill(disk)
    for i in range(2000):  # chunks to save that no longer fit
      client.insert(np.full((8,), i, np.float32), priorities={'t': 1.0})
    with pytest.raises(recovery.CheckpointError) as e:
      replay_checkpoint.save(client.checkpoint, str(workdir / 'replay'))
    assert str(e.value).startswith(
        f"disk full while saving Reverb's replay checkpoint in "
        f"{workdir / 'replay'} (")
    assert os.listdir(workdir / 'replay') == [kept]  # the partial one removed
    server.stop()


# --- several hosts ---------------------------------------------------------


class _HostKilledBeforeRename(checkpointing.HostCheckpointer):

  def _commit(self, tmp, final):
    raise SystemExit  # as a kill: the complete tmp folder is never renamed


def _host_checkpoints(workdir, steps=(100, 200)):
  ckpt = checkpointing.HostCheckpointer(str(workdir))
  for step in steps:
    ckpt.save(step, {'w': np.full((3,), step, np.float32)},
              dict(actor_steps=step, device_replay_filled_per_shard=2),
              replay={'obs': np.full((1, 2, 2), step, np.float32)})
  return ckpt


def test_host_checkpointer_falls_back_and_removes_unfinished(tmp_path, capfd):
  _host_checkpoints(tmp_path)
  with pytest.raises(SystemExit):
    _HostKilledBeforeRename(str(tmp_path)).save(
        300, {'w': np.zeros(3, np.float32)}, dict(actor_steps=300))
  checkpoints = tmp_path / 'checkpoints'
  os.truncate(checkpoints / '200' / 'replay.npz', 100)
  assert sorted(os.listdir(checkpoints)) == ['100', '200', '300.tmp']
  step, meta = checkpointing.resume_point(str(tmp_path), num_hosts=2)
  assert (step, meta['actor_steps']) == (100, 100)
  warnings = [l for l in capfd.readouterr().err.splitlines()
              if l.startswith('warning:')]
  assert len(warnings) == 1 and f'checkpoint 200 in {checkpoints}' in (
      warnings[0])
  assert sorted(os.listdir(checkpoints)) == ['100', '200.damaged']


class _Hosts:
  """Two hosts' learners in two threads: hosts.exchange and from_host0
  (collectives) over a barrier."""

  def __init__(self):
    self._barrier = threading.Barrier(2, timeout=60)
    self._slots = [None, None]

  def _host(self):
    return int(threading.current_thread().name)

  def exchange(self, row):
    self._slots[self._host()] = np.asarray(row)
    self._barrier.wait()
    rows = np.stack(self._slots)
    self._barrier.wait()
    return rows

  def from_host0(self, tree):
    return jax.tree.map(np.asarray, jax.tree.unflatten(
        jax.tree.structure(tree), list(self.exchange(np.concatenate(
            [np.ravel(x) for x in jax.tree.leaves(tree)]))[0:1])))

  def run(self, body):
    out = [None, None]

    def target(h):
      try:
        out[h] = body(h)
      except Exception as e:  # pylint: disable=broad-except
        out[h] = e
    threads = [threading.Thread(target=target, args=(h,), name=str(h))
               for h in (0, 1)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    return out


class _FakeLearner:

  def __init__(self):
    self.state, self.replay = {'w': np.zeros((3,), np.float32)}, None

  def save(self):
    return self.state

  def restore(self, state):
    self.state = state

  def restore_replay(self, filled, read):
    self.replay = read({'obs': np.zeros((1, filled, 2), np.float32)})


@pytest.mark.parametrize('host1_damaged,host1_steps,expected', [
    ((200,), (100, 200), 100),   # host 1's newest damaged: both take 100
    ((), (100,), 100),           # host 1 never saved 200: both take 100
    ((100, 200), (100, 200), 'error'),  # host 1 can read none: both fail
])
def test_hosts_restore_a_step_every_host_can_read(
    tmp_path, monkeypatch, host1_damaged, host1_steps, expected):
  fake = _Hosts()
  monkeypatch.setattr(hosts, 'exchange', fake.exchange)
  monkeypatch.setattr(hosts, 'from_host0', fake.from_host0)
  _host_checkpoints(tmp_path / 'h0')
  _host_checkpoints(tmp_path / 'h1', host1_steps)
  for step in host1_damaged:
    os.truncate(tmp_path / 'h1' / 'checkpoints' / str(step) / 'state.npz', 50)
  learners, warnings = [_FakeLearner(), _FakeLearner()], [[], []]
  out = fake.run(lambda h: lockstep.restore(
      checkpointing.HostCheckpointer(str(tmp_path / f'h{h}')), learners[h],
      with_replay=True, warn=warnings[h].append))
  if expected == 'error':
    assert all(isinstance(e, recovery.CheckpointError) for e in out), out
    assert 'host 0: [200, 100], 1: [200, 100]' in str(out[0])
    return
  assert [m['actor_steps'] for m in out] == [expected] * 2
  for learner in learners:  # host 0's state; each host's own replay
    np.testing.assert_array_equal(learner.state['w'], [expected] * 3)
    np.testing.assert_array_equal(learner.replay['obs'], expected)
  assert not warnings[0] and len(warnings[1]) == len(host1_damaged)
  # The counter, seeded from this host's newest, gets the restored counts.
  assert lockstep.count_corrections(dict(actor_steps=200, episodes=4),
                                    out[0]) == dict(actor_steps=-100,
                                                    episodes=-4)


def test_a_checkpoint_failure_of_a_node_is_one_line(tmp_path):
  """A distributed learner's failed save (a full disk) reaches the user as
  one line, without the node's traceback."""
  control = control_lib.Control(str(tmp_path))
  error = recovery.CheckpointError('disk full while saving checkpoint 9 in X')
  try:
    raise error
  except recovery.CheckpointError:
    control.record_failure('learner', error)
  with pytest.raises(supervisor.ProgramFailed) as e:
    supervisor._check_failures(  # pylint: disable=protected-access
        control, control.statuses(), ['learner'], None, '', None)
  assert str(e.value) == ('node learner failed: CheckpointError: disk full '
                          'while saving checkpoint 9 in X')
