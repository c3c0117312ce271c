"""single_process.train on cartpole swingup: outputs, resume, graceful stop."""

import csv
import dataclasses
import json
import os
import signal
import threading
import time

import pytest

from wpo_agent import checkpointing
from wpo_agent import resume
from wpo_agent import runs
from wpo_agent import single_process

import replay_checkpoints
import tiny


def tiny_config():
  # spi 32 = batch 32: one SGD step per actor step once the replay holds 100.
  # The reverb backend, whose ratio is per actor step (the device backend's
  # per drained chunk: test_device_replay.py).
  return tiny.config(min_replay_size=100, max_replay_size=10_000,
                     samples_per_insert=32.0, prefetch_size=2,
                     variable_update_period=100, replay_backend='reverb')


def run_options(workdir, max_actor_steps, **kwargs):
  # One environment: the counts below are per step (several environments:
  # test_loops.py).
  options = dict(domain='cartpole', task='swingup', seed=0,
                 workdir=str(workdir), max_actor_steps=max_actor_steps,
                 eval_every=300, eval_episodes=1, progress_every_s=1e9,
                 checkpoint_every_s=1e9, tensorboard=True, quiet=True,
                 envs_per_actor=1)
  options.update(kwargs)
  return runs.RunOptions(**options)


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


@pytest.mark.slow  # a real training run
def test_train_outputs_then_resume(tmp_path):
  config = tiny_config()
  summary = single_process.train(run_options(tmp_path, 600), config)
  assert summary['actor_steps'] == 600
  assert summary['stopped_early'] is False
  first_learner_steps = summary['learner_steps']
  # (600 - 100) inserts after min_replay_size x 32 / 32 samples per step.
  assert first_learner_steps == 500
  assert summary['last_eval_return'] is not None
  assert summary['task'] == 'swingup'

  assert {'checkpoints', 'config.json', 'eval.csv', 'tb', 'train.csv'} <= set(
      os.listdir(tmp_path))
  evals = read_csv(tmp_path / 'eval.csv')
  assert [int(r['actor_steps']) for r in evals] == [300, 600]
  assert set(evals[0]) == {'actor_steps', 'learner_steps', 'eval_return_mean',
                           'eval_return_std', 'wall_time'}
  assert int(evals[-1]['learner_steps']) == first_learner_steps
  train_rows = read_csv(tmp_path / 'train.csv')
  assert len(train_rows) >= 10
  assert {'critic_loss', 'learner_steps', 'actor_steps'} <= set(train_rows[0])
  assert os.listdir(tmp_path / 'tb')  # TensorBoard event dirs
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 600
  with open(tmp_path / 'config.json') as f:
    saved = json.load(f)
  assert saved['config']['batch_size'] == 32
  assert saved['run']['max_actor_steps'] == 600

  # The replay buffer was checkpointed with the learner. One unfinished episode
  # of 600 steps, n = 5: like acme, s_0 -> s_k for k = 1..4 at the start, then
  # s_t -> s_{t+5} for t = 0..595: 4 + 596 items.
  assert replay_checkpoints.items_in_checkpoint(tmp_path) == 600

  # Same workdir, a larger budget: resumes and appends.
  summary = single_process.train(run_options(tmp_path, 1200), config)
  assert summary['actor_steps'] == 1200
  # The restored replay already holds >= 100 items, so learning goes on at
  # once: one SGD step per actor step, 600 more.
  assert summary['learner_steps'] == first_learner_steps + 600
  evals = read_csv(tmp_path / 'eval.csv')
  assert [int(r['actor_steps']) for r in evals] == [300, 600, 900, 1200]
  learner_steps = [int(r['learner_steps']) for r in evals]
  assert learner_steps == sorted(learner_steps)
  assert learner_steps[2] > first_learner_steps
  wall = [float(r['wall_time']) for r in evals]
  assert wall == sorted(wall)  # elapsed time continues across the resume
  train_steps = [int(r['learner_steps']) for r in read_csv(tmp_path /
                                                           'train.csv')]
  assert train_steps == sorted(train_steps)
  assert train_steps[-1] > first_learner_steps
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 1200


def _sigterm_when_training(workdir, done: threading.Event, timeout=120):
  """Sends SIGTERM once GracefulStop's handler is installed and learning runs."""
  deadline = time.time() + timeout
  safe_handler = signal.getsignal(signal.SIGTERM)
  while time.time() < deadline and not done.is_set():
    handler = signal.getsignal(signal.SIGTERM)
    if (handler is not safe_handler and
        os.path.exists(os.path.join(workdir, 'train.csv'))):
      os.kill(os.getpid(), signal.SIGTERM)
      return
    time.sleep(0.05)


@pytest.fixture
def sigterm_guard():
  """A SIGTERM that arrives outside train() must not kill the test process."""
  received = []
  previous = signal.signal(signal.SIGTERM, lambda *a: received.append(a))
  yield received
  signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow  # a real training run
def test_sigterm_stops_checkpoints_and_resumes(tmp_path, sigterm_guard):
  config = tiny_config()
  guard = signal.getsignal(signal.SIGTERM)
  done = threading.Event()
  killer = threading.Thread(target=_sigterm_when_training,
                            args=(str(tmp_path), done), daemon=True)
  killer.start()
  try:
    summary = single_process.train(run_options(tmp_path, 100_000), config)
  finally:
    done.set()
    killer.join()
  assert not sigterm_guard  # the signal reached train's handler
  assert summary['stopped_early'] is True
  stopped_at = summary['actor_steps']
  stopped_learner_steps = summary['learner_steps']
  assert 100 < stopped_at < 100_000
  assert summary['learner_steps'] > 0
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == stopped_at
  # The handler train() replaced is back (GracefulStop's is not left behind).
  assert signal.getsignal(signal.SIGTERM) is guard

  summary = single_process.train(run_options(tmp_path, stopped_at + 200),
                                 config)
  assert summary['stopped_early'] is False
  assert summary['actor_steps'] == stopped_at + 200
  # The replay came back with the checkpoint: one SGD step per actor step.
  assert summary['learner_steps'] == stopped_learner_steps + 200
  assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == (
      stopped_at + 200)


@pytest.mark.slow  # a real training run
def test_resume_without_replay_checkpoint_refills(tmp_path):
  config = tiny_config()
  options = dict(checkpoint_replay=False, eval_every=10_000)
  summary = single_process.train(run_options(tmp_path, 300, **options), config)
  assert summary['learner_steps'] == 200  # (300 - 100) x 32 / 32
  assert not os.path.exists(tmp_path / 'replay')
  summary = single_process.train(run_options(tmp_path, 600, **options), config)
  # The replay refills to 100 before learning resumes: 200 more steps.
  assert summary['learner_steps'] == 400


def test_resume_check_refuses_another_runs_workdir(tmp_path):
  config = tiny_config()
  resume.write_run_config(str(tmp_path), run_options(tmp_path, 10),
                                  config)
  # No checkpoint yet: anything may reuse the workdir.
  resume.check_resumable(
      str(tmp_path), run_options(tmp_path, 10, domain='walker', task='walk'),
      config)
  (tmp_path / 'checkpoints' / '10').mkdir(parents=True)
  # Hyperparameters that do not shape the state may change on a resume...
  resume.check_resumable(
      str(tmp_path), run_options(tmp_path, 20),
      dataclasses.replace(config, policy_learning_rate=1e-4))
  # ...the task and the network sizes may not.
  with pytest.raises(resume.WorkdirMismatchError) as e:
    resume.check_resumable(
        str(tmp_path), run_options(tmp_path, 20, task='balance'),
        dataclasses.replace(config, critic_layer_sizes=(32, 32)))
  message = str(e.value)
  assert "task: saved 'swingup', now 'balance'" in message
  assert 'critic_layer_sizes: saved [16, 16], now (32, 32)' in message
  assert 'domain:' not in message and 'learning_rate' not in message
  # A restored replay table keeps its size and rate limiter, so while a replay
  # checkpoint would be restored those may not change either.
  (tmp_path / 'replay' / 'some-checkpoint').mkdir(
      parents=True)
  with pytest.raises(resume.WorkdirMismatchError,
                     match=r'samples_per_insert: saved 32.0, now 64.0\).*'
                     r'--nocheckpoint_replay'):
    resume.check_resumable(
        str(tmp_path), run_options(tmp_path, 20),
        dataclasses.replace(config, samples_per_insert=64.0))
  resume.check_resumable(
      str(tmp_path), run_options(tmp_path, 20, checkpoint_replay=False),
      dataclasses.replace(config, samples_per_insert=64.0))
  # The single-process runner keeps the ratio itself over a MinSize table,
  # so there samples_per_insert may change with the replay restored; the mode
  # may not (the restored table would keep the other mode's limiter).
  # (A launch without the replay may switch modes: its config.json then
  # records single-process mode.)
  resume.write_run_config(str(tmp_path), run_options(
      tmp_path, 20, single_process=True, checkpoint_replay=False), config)
  resume.check_resumable(
      str(tmp_path), run_options(tmp_path, 30, single_process=True),
      dataclasses.replace(config, samples_per_insert=64.0))
  with pytest.raises(resume.WorkdirMismatchError,
                     match=r'single_process: saved True, now False'):
    resume.check_resumable(str(tmp_path), run_options(tmp_path, 30), config)
  with pytest.raises(resume.WorkdirMismatchError, match=r'max_replay_size'):
    resume.check_resumable(
        str(tmp_path), run_options(tmp_path, 30, single_process=True),
        dataclasses.replace(config, max_replay_size=20_000))


@pytest.mark.slow  # a real training run
def test_resume_follows_new_eval_schedule_and_ends_with_an_eval(tmp_path):
  config = tiny_config()
  # Not a multiple of eval_every: the run still ends with an evaluation.
  single_process.train(run_options(tmp_path, 650, eval_every=300), config)
  assert [int(r['actor_steps']) for r in read_csv(tmp_path / 'eval.csv')] == [
      300, 600, 650]
  # Resumed with a finer schedule: evaluations at its multiples from the
  # resume point (not at the old schedule's next point, 900).
  single_process.train(run_options(tmp_path, 900, eval_every=100), config)
  rows = read_csv(tmp_path / 'eval.csv')
  assert [int(r['actor_steps']) for r in rows] == [
      300, 600, 650, 700, 800, 900]
  # Run again at the limit: nothing to do, and no second eval at 900.
  summary = single_process.train(run_options(tmp_path, 900, eval_every=100),
                                 config)
  assert summary['actor_steps'] == 900
  assert summary['last_eval_return'] == pytest.approx(
      float(rows[-1]['eval_return_mean']))
  assert len(read_csv(tmp_path / 'eval.csv')) == len(rows)
