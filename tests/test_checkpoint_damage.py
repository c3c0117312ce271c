"""Checkpoints that survive kills, damage and a full disk (issue 23, item 2).

A resume restores the newest checkpoint that reads back whole. A damaged
newest one (a truncated or deleted file) is set aside as `<step>.damaged`
with exactly one `warning:` line naming it and the step used, and the learner
state, the device replay and the counts all come from that step (the
supervisor's resume_point and the learner agree); when none reads back, one
line (CheckpointError, which launch/run_local.py prints as `error: ...`) and
nothing is moved. A save killed at any point leaves the previous checkpoint
in use; a full disk stops the save with one 'disk full' line naming the
folder, the previous checkpoint intact and no partial files left. Reverb's
replay checkpoint and several hosts': test_checkpoint_damage_replay.py. The
last test resumes a damaged run through launch/run_local.py.
"""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from wpo_agent import checkpoint_recovery as recovery
from wpo_agent import checkpointing
from wpo_agent import device_feed
from wpo_agent import device_replay
from wpo_agent import learner as learner_lib
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent import resume
from wpo_agent import sharding
from wpo_agent.types import Batch
import small_disk
import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, 'tests')
OBS, ACT = 3, 2
CONFIG = tiny.config(max_replay_size=1024, min_replay_size=128)
ITEM = Batch(np.zeros(OBS, np.float32), np.zeros(ACT, np.float32),
             np.zeros((), np.float32), np.zeros((), np.float32),
             np.zeros(OBS, np.float32))


def _networks():
  return networks_lib.make_networks(OBS, -np.ones(ACT), np.ones(ACT),
                                    **CONFIG.network_kwargs())


def _chunk(first: int) -> Batch:
  ids = np.arange(first, first + 128, dtype=np.float32)
  return Batch(np.repeat(ids[:, None], OBS, 1), np.repeat(ids[:, None], ACT, 1),
               ids, ids / 1e6, np.repeat(ids[:, None], OBS, 1) + 0.5)


def _learner(chunks: int = 0, key: int = 0) -> learner_lib.WPOLearner:
  """A real learner whose device replay holds `chunks` chunks of 128."""
  replay = device_replay.DeviceReplay(ITEM, capacity=1024, batch_size=32,
                                      mesh=sharding.make_mesh())
  feed = device_feed.DeviceFeed(
      replay, iter([_chunk(128 * i) for i in range(chunks)]),
      samples_per_insert=1.0, keep_ratio=False, sgd_steps_per_call=1,
      min_size=128)
  learner = learner_lib.WPOLearner(_networks(), CONFIG, feed,
                                   jax.random.PRNGKey(key),
                                   mesh=sharding.make_mesh(), logger=None)
  for _ in range(chunks):
    assert feed.pull(timeout=60)
  return learner


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _assert_same(a, b):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def _two_checkpoints(workdir):
  """Checkpoints 100 (1 chunk, key 0) and 200 (2 chunks, key 1) of real
  learners, with their device replays; returns the learner of 100."""
  ckpt = checkpointing.Checkpointer(str(workdir))
  first = _learner(chunks=1, key=0)
  checkpointing.save_learner(ckpt, 100, first, dict(actor_steps=100),
                             with_replay=True)
  checkpointing.save_learner(ckpt, 200, _learner(chunks=2, key=1),
                             dict(actor_steps=200), with_replay=True)
  ckpt.close()
  return first


def _truncate_data(item_dir):
  """Halves every data file of an orbax item (tensorstore's `d/` folders)."""
  for root, _, files in os.walk(item_dir):
    if os.path.basename(root) == 'd':
      for name in files:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)


def _damage(step_dir, how):
  if how == 'state data truncated':
    _truncate_data(os.path.join(step_dir, 'state'))
  elif how == 'replay data truncated':
    _truncate_data(os.path.join(step_dir, 'replay'))
  elif how == 'metadata deleted':
    os.remove(os.path.join(step_dir, 'metadata', 'metadata'))
  elif how == 'state tree deleted':
    os.remove(os.path.join(step_dir, 'state', '_METADATA'))


DAMAGE = ['state data truncated', 'replay data truncated', 'metadata deleted',
          'state tree deleted']


@pytest.mark.parametrize('how', DAMAGE)
def test_damaged_newest_falls_back_with_one_warning(tmp_path, how):
  first = _two_checkpoints(tmp_path)
  checkpoints = str(tmp_path / 'checkpoints')
  _damage(os.path.join(checkpoints, '200'), how)
  lines, learner = [], _learner()
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  meta = checkpointing.restore_learner(ckpt, learner, with_replay=True,
                                       warn=lines.append)
  # State, device replay and counts: all checkpoint 100's.
  assert meta['actor_steps'] == 100
  _assert_same(learner.save(), first.save())
  assert learner.source.feed.items == 128
  _assert_same(learner.source.feed.to_host(), first.source.feed.to_host())
  assert len(lines) == 1 and lines[0].startswith('warning: ')
  assert f'checkpoint 200 in {checkpoints}' in lines[0]
  assert 'resuming from checkpoint 100' in lines[0]
  assert f'{checkpoints}/200.damaged' in lines[0]
  # Set aside: no longer a step, so a later save of 200 does not collide.
  assert ckpt.all_steps() == (100,)
  checkpointing.save_learner(ckpt, 200, learner, dict(actor_steps=200),
                             with_replay=True)
  assert ckpt.all_steps() == (100, 200)
  ckpt.close()
  assert sorted(os.listdir(checkpoints)) == ['100', '200', '200.damaged']


def test_supervisor_and_learner_restore_the_same_step(tmp_path, capfd):
  """resume_point (the supervisor's counts) sets the damage aside with the
  one warning on stderr; the learner then restores that step, silently."""
  first = _two_checkpoints(tmp_path)
  _damage(str(tmp_path / 'checkpoints' / '200'), 'replay data truncated')
  step, meta = checkpointing.resume_point(str(tmp_path))
  assert (step, meta['actor_steps']) == (100, 100)
  err = capfd.readouterr().err
  warnings = [l for l in err.splitlines() if l.startswith('warning:')]
  assert len(warnings) == 1 and 'checkpoint 200' in warnings[0], err
  assert 'Traceback' not in err  # orbax's error logs are quiet
  learner = _learner()
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert checkpointing.restore_learner(ckpt, learner, with_replay=True,
                                       step=step) == meta
  _assert_same(learner.save(), first.save())
  assert 'warning' not in capfd.readouterr().err


def test_no_loadable_checkpoint_is_one_error_line(tmp_path):
  _two_checkpoints(tmp_path)
  checkpoints = str(tmp_path / 'checkpoints')
  _damage(os.path.join(checkpoints, '200'), 'state data truncated')
  _damage(os.path.join(checkpoints, '100'), 'metadata deleted')
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  for read in (
      lambda: checkpointing.restore_learner(ckpt, _learner(),
                                            with_replay=True),
      lambda: checkpointing.resume_point(str(tmp_path))):
    # run_local.py prints a WorkdirMismatchError as one `error:` line.
    with pytest.raises(resume.WorkdirMismatchError) as e:
      read()
    text = str(e.value)
    assert len(text.splitlines()) == 1 and 'checkpoints 200, 100' in text
    assert f'move {checkpoints} away' in text and '--workdir' in text
  ckpt.close()
  assert sorted(os.listdir(checkpoints)) == ['100', '200']  # nothing moved


# --- a save killed at a deterministic point -----------------------------------


class _KillingPath(ocp.path.atomicity.AtomicRenameTemporaryPath):
  """Kills this process (SIGKILL) when orbax, saving step KILL_STEP, has
  just made its tmp folder ('created') or is about to rename the complete
  folder to the step's name ('finalize')."""

  async def create(self, *args, **kwargs):
    made = await super().create(*args, **kwargs)
    self._maybe_die('created')
    return made

  async def finalize(self, *args, **kwargs):
    self._maybe_die('finalize')
    return await super().finalize(*args, **kwargs)

  def _maybe_die(self, point):
    if (self.get_final().name == os.environ['KILL_STEP'] and
        point == os.environ['KILL_AT']):
      os.kill(os.getpid(), signal.SIGKILL)


class _KilledCheckpointer(checkpointing.Checkpointer):

  def _options(self, max_to_keep):
    options = super()._options(max_to_keep)
    options.temporary_path_class = _KillingPath
    return options


def _state(key):
  return learning.init_training_state(_networks(), CONFIG,
                                      jax.random.PRNGKey(key))


def save_then_die(workdir):
  """In a subprocess: saves 100 (key 0), then dies saving 200 (key 1)."""
  ckpt = _KilledCheckpointer(workdir)
  ckpt.save(100, _state(0), dict(actor_steps=100))
  ckpt.save(200, _state(1), dict(actor_steps=200))
  raise AssertionError('not killed')


@pytest.mark.parametrize('point', ['created', 'finalize'])
def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path, point):
  code = (f'import sys; sys.path[:0] = [{TESTS!r}, {REPO!r}]; '
          'import test_checkpoint_damage as t; t.save_then_die(sys.argv[1])')
  proc = subprocess.run(
      [sys.executable, '-c', code, str(tmp_path)], capture_output=True,
      text=True, timeout=120,
      env=dict(os.environ, KILL_STEP='200', KILL_AT=point))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  checkpoints = tmp_path / 'checkpoints'
  assert '200.orbax-checkpoint-tmp' in os.listdir(checkpoints)
  lines, learner = [], _learner()
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.all_steps() == (100,)  # the tmp folder is no step
  meta = checkpointing.restore_learner(ckpt, learner, with_replay=True,
                                       warn=lines.append)
  assert meta == dict(actor_steps=100) and not lines  # nothing damaged
  _assert_same(learner.save(), _state(0))
  assert sorted(os.listdir(checkpoints)) == ['100']  # unfinished removed
  checkpointing.save_learner(ckpt, 200, learner, dict(actor_steps=200),
                             with_replay=True)
  assert ckpt.all_steps() == (100, 200)


# --- a full disk -------------------------------------------------------------


@pytest.fixture
def disk(tmp_path):
  """A 1 MiB filesystem (root only), or None."""
  with small_disk.mounted(tmp_path / 'small') as mount:
    yield mount


def test_disk_full_is_one_line_and_keeps_the_previous(disk, capfd):
  if disk is None:
    pytest.skip('no tmpfs (not root): the file-size limit test stands in')
  workdir = str(disk / 'run')
  learner = _learner(chunks=1)
  ckpt = checkpointing.Checkpointer(workdir)
  checkpointing.save_learner(ckpt, 100, learner, dict(actor_steps=100),
                             with_replay=True)
  filler = small_disk.fill(disk)
  with pytest.raises(recovery.CheckpointError) as e:
    checkpointing.save_learner(ckpt, 200, learner, dict(actor_steps=200),
                               with_replay=True)
  text, checkpoints = str(e.value), os.path.join(workdir, 'checkpoints')
  assert len(text.splitlines()) == 1, text
  assert text.startswith(f'disk full while saving checkpoint 200 in '
                         f'{checkpoints} (')
  assert 'checkpoint 100 there is intact' in text
  assert 'Traceback' not in capfd.readouterr().err  # orbax's are quiet
  assert ckpt.all_steps() == (100,)
  # The save removed its tmp folder, but a write still in flight may make it
  # again: the next launch removes what is left (restore_learner does).
  ckpt.remove_unfinished()
  assert sorted(os.listdir(checkpoints)) == ['100']
  os.remove(filler)
  assert ckpt.restore(learner.save())[1] == dict(
      actor_steps=100, device_replay_filled_per_shard=128)
  checkpointing.save_learner(ckpt, 200, learner, dict(actor_steps=200),
                             with_replay=True)
  assert ckpt.all_steps() == (100, 200)
  ckpt.close()


def write_beyond_limit(workdir):
  """In a subprocess: saves 100, then 200 under a 4 KiB file-size limit."""
  import resource  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(100, _state(0), dict(actor_steps=100))
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
  resource.setrlimit(resource.RLIMIT_FSIZE,
                     (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
  try:
    ckpt.save(200, _state(1), dict(actor_steps=200))
  except recovery.CheckpointError as e:
    print(f'CheckpointError: {e}')


def test_failed_write_is_one_line_and_keeps_the_previous(tmp_path):
  """A fault at the write (a file-size limit: EFBIG), where no small
  filesystem can be mounted."""
  code = (f'import sys; sys.path[:0] = [{TESTS!r}, {REPO!r}]; '
          'import test_checkpoint_damage as t; t.write_beyond_limit('
          'sys.argv[1])')
  proc = subprocess.run([sys.executable, '-c', code, str(tmp_path)],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  checkpoints = str(tmp_path / 'checkpoints')
  assert proc.stdout.startswith(f'CheckpointError: cannot save checkpoint 200 '
                                f'in {checkpoints} (')
  assert 'File too large' in proc.stdout and 'Traceback' not in proc.stderr
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.all_steps() == (100,)
  ckpt.remove_unfinished()
  assert sorted(os.listdir(checkpoints)) == ['100']
  assert ckpt.restore(_state(0))[1] == dict(actor_steps=100)
  ckpt.close()


# --- end to end: launch/run_local.py --single_process ------------------------


def _run_local(workdir, steps):
  args = ['--domain=cartpole', '--task=swingup', '--single_process',
          '--config=small', f'--max_actor_steps={steps}', '--eval_every=100000',
          '--eval_episodes=1', '--progress_every=1000', '--envs_per_actor=8',
          # A checkpoint after every round of 8 steps: two kept.
          '--checkpoint_every=0', f'--workdir={workdir}',
          *tiny.flags(min_replay_size=64)]
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'run_local.py'), *args],
      cwd=REPO, env=dict(os.environ, MUJOCO_GL='egl'), capture_output=True,
      text=True, timeout=240)


def _train_in_process(workdir, steps):
  from wpo_agent import runs  # pylint: disable=g-import-not-at-top
  from wpo_agent import single_process  # pylint: disable=g-import-not-at-top
  single_process.train(runs.RunOptions(
      domain='cartpole', task='swingup', workdir=str(workdir),
      max_actor_steps=steps, eval_every=100_000, eval_episodes=1,
      envs_per_actor=8, checkpoint_every_s=0, progress_every_s=1e9,
      tensorboard=False, quiet=True), tiny.config(min_replay_size=64))


@pytest.mark.slow  # two launches of run_local.py
def test_run_local_resumes_from_a_damaged_run(tmp_path):
  workdir = tmp_path / 'run'
  _train_in_process(workdir, 96)
  checkpoints = workdir / 'checkpoints'
  assert sorted(os.listdir(checkpoints)) == ['88', '96']
  _damage(str(checkpoints / '96'), 'state data truncated')
  proc = _run_local(workdir, 160)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  warnings = [l for l in proc.stderr.splitlines() if l.startswith('warning:')]
  assert len(warnings) == 1, proc.stderr[-3000:]
  assert f'cannot load checkpoint 96 in {checkpoints}' in warnings[0]
  assert 'resuming from checkpoint 88' in warnings[0]
  assert 'at actor step 88 ' in proc.stdout
  assert sorted(os.listdir(checkpoints)) == ['152', '160', '96.damaged']
  # None readable: one `error:` line, a non-zero exit, nothing moved.
  for step in ('152', '160'):
    _damage(str(checkpoints / step), 'metadata deleted')
  proc = _run_local(workdir, 240)
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert errors[0].startswith(
      f'error: no checkpoint can be loaded: cannot load checkpoints 160, 152 '
      f'in {checkpoints} (')
  assert sorted(os.listdir(checkpoints)) == ['152', '160', '96.damaged']
