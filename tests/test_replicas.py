"""K replicas of a task as one task (wpo_agent/replicas.py, task '<task>-xK'):
K = 1 is the plain task bit for bit; K replicas concatenate observations,
split the action in order, combine rewards by the smooth minimum, discounts
by their product, and start and end their episodes together; bad spellings
and temperatures are one line; suites and the suite runner name replicated
tasks; and a short run on one writes eval.csv, a video of its replicas side
by side, and refuses a resume with another temperature.
"""

import csv
import math
import os
import re
import subprocess
import sys

import dm_env
from dm_control import suite as dm_suite
import imageio
import numpy as np
import pytest

from wpo_agent import environments
from wpo_agent import replicas
from wpo_agent import resume
from wpo_agent import runs
from wpo_agent.analysis import suites

import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_LOCAL = os.path.join(REPO, 'launch', 'run_local.py')


def _same_array(a, b):
  """Equal dtype, shape and bytes (None equals None)."""
  if a is None or b is None:
    return a is None and b is None
  a, b = np.asarray(a), np.asarray(b)
  return (a.dtype == b.dtype and a.shape == b.shape and
          a.tobytes() == b.tobytes())


@pytest.mark.parametrize('domain,task', [('cartpole', 'swingup'),
                                         ('walker', 'walk')])
def test_one_replica_is_the_plain_task_step_for_step(domain, task):
  plain = environments.make_environment(domain, task, seed=5)
  one = environments.make_environment(domain, f'{task}-x1', seed=5)
  assert isinstance(one, replicas.ReplicaEnvironment)
  assert environments.environment_spec(one) == environments.environment_spec(
      plain)
  rng = np.random.default_rng(0)
  steps = 0
  for _ in range(2):  # two episodes: the step after the last one resets
    a, b = plain.reset(), one.reset()
    while True:
      assert a.step_type == b.step_type
      for field in ('observation', 'reward', 'discount'):
        assert _same_array(getattr(a, field), getattr(b, field)), field
      if a.last():
        break
      action = rng.uniform(-1.5, 1.5, plain.action_spec().shape).astype(
          np.float32)
      a, b = plain.step(action), one.step(action)
      steps += 1
  assert steps == 2000


def test_three_replicas_shapes_and_specs():
  plain = environments.make_environment('humanoid', 'stand', seed=0)
  three = environments.make_environment('humanoid', 'stand-x3', seed=0)
  obs, act = plain.observation_spec(), plain.action_spec()
  assert obs.shape == (67,) and act.shape == (21,)
  assert three.observation_spec() == obs.replace(shape=(201,))
  spec = three.action_spec()
  assert spec.shape == (63,) and spec.dtype == np.float32
  np.testing.assert_array_equal(spec.minimum, -np.ones(63))
  np.testing.assert_array_equal(spec.maximum, np.ones(63))
  assert three.reward_spec() == plain.reward_spec()
  assert three.discount_spec() == plain.discount_spec()
  first = three.reset()
  assert first.first() and first.reward is None and first.discount is None
  assert first.observation.shape == (201,)
  assert first.observation.dtype == np.float32
  step = three.step(np.zeros(63, np.float32))
  assert step.reward.dtype == np.float32 and step.reward.shape == ()
  assert step.discount.dtype == np.float32 and step.discount.shape == ()
  assert environments.episode_length(three) == 1000
  assert three.control_timestep() == plain.control_timestep()


def test_replicas_start_from_their_own_seeds():
  seeds = replicas.replica_seeds(7, count=3)
  assert seeds[0] == 7 and len(set(seeds)) == 3
  assert seeds == replicas.replica_seeds(7, count=3)  # deterministic
  assert replicas.replica_seeds(7, count=5)[:3] == seeds
  assert replicas.replica_seeds(None, count=2) == [None, None]
  env = environments.make_environment('cartpole', 'swingup-x3', seed=7)
  parts = env.reset().observation.reshape(3, -1)
  for part, seed in zip(parts, seeds):
    alone = environments.make_environment('cartpole', 'swingup', seed=seed)
    np.testing.assert_array_equal(part, alone.reset().observation)
  assert not np.array_equal(parts[1], parts[2])


def test_each_replica_gets_its_own_slice_of_the_action():
  seed, count = 3, 3
  env = environments.make_environment('walker', 'walk-x3', seed=seed)
  alone = [environments.make_environment('walker', 'walk', seed=s)
           for s in replicas.replica_seeds(seed, count=count)]
  dims = alone[0].action_spec().shape[0]
  env.reset()
  for plain in alone:
    plain.reset()
  rng = np.random.default_rng(1)
  for _ in range(50):
    action = np.zeros((count, dims), np.float32)
    action[1] = rng.uniform(-1, 1, dims)  # only replica 1 acts
    step = env.step(action.reshape(-1))
    singles = [plain.step(a) for plain, a in zip(alone, action)]
  parts = step.observation.reshape(count, -1)
  for i, (replica, plain, single) in enumerate(zip(env.replicas, alone,
                                                   singles)):
    np.testing.assert_array_equal(replica.physics.data.qpos,
                                  plain.physics.data.qpos, err_msg=str(i))
    np.testing.assert_array_equal(replica.physics.data.qvel,
                                  plain.physics.data.qvel, err_msg=str(i))
    np.testing.assert_array_equal(parts[i], single.observation)
  assert _same_array(step.reward, replicas.softmin(
      [s.reward for s in singles], temperature=replicas.DEFAULT_TEMPERATURE))
  # Zero torques and a driven walker part ways.
  assert not np.allclose(alone[0].physics.data.qpos, alone[1].physics.data.qpos)


@pytest.mark.parametrize('count', [2, 3, 5])
@pytest.mark.parametrize('tau', [0.01, 0.1, 1.0])
def test_softmin_by_hand(count, tau):
  softmin = lambda r: float(replicas.softmin(r, temperature=tau))
  for value in (0.0, 0.3, 1.0):
    assert softmin([value] * count) == np.float32(value)
  # One replica at 0, the others at 1.
  expected = -tau * math.log((1 + (count - 1) * math.exp(-1 / tau)) / count)
  assert softmin([0.0] + [1.0] * (count - 1)) == pytest.approx(expected,
                                                               rel=1e-6)
  rng = np.random.default_rng(count)
  for _ in range(100):
    r = rng.uniform(0, 1, count).astype(np.float32)
    value = replicas.softmin(r, temperature=tau)
    assert value.dtype == np.float32 and value.shape == ()
    assert r.min() <= value <= np.float32(r.astype(np.float64).mean())
    # exp of (r - min) / tau: the definition, computed directly.
    direct = -tau * math.log(np.mean(np.exp(-r.astype(np.float64) / tau)))
    assert float(value) == pytest.approx(direct, rel=1e-6, abs=1e-7)


def test_softmin_limits_and_one_reward():
  r = np.array([0.2, 0.9, 0.5], np.float32)
  # tau -> 0: the minimum, within tau log K (the value at one 0 and K - 1
  # infinitely larger rewards).
  for tau in (1e-3, 1e-6):
    assert 0 <= float(replicas.softmin(r, temperature=tau)) - float(
        r.min()) <= tau * math.log(3) * (1 + 1e-6) + 1e-7
  assert replicas.softmin(r, temperature=1e-12) == r.min()
  assert float(replicas.softmin(r, temperature=1e6)) == pytest.approx(
      float(r.mean()), abs=1e-6)
  assert float(replicas.softmin(r, temperature=1e30)) == pytest.approx(
      float(r.mean()), abs=1e-6)  # exp rounds to 1 here: expm1 keeps it
  for value in (0.0, 0.123456789, 1.0):
    one = np.float32(value)
    assert _same_array(replicas.softmin([one], temperature=0.1),
                       np.array(one, np.float32))
  # The default weighs one failing replica of K = 3, 5 near the minimum.
  assert float(replicas.softmin([0, 1, 1], temperature=0.1)) < 0.12
  assert float(replicas.softmin([0, 1, 1, 1, 1], temperature=0.1)) < 0.17


def test_episodes_end_together_at_the_time_limit():
  env = environments.make_environment('cartpole', 'balance-x3', seed=0)
  assert env.reset().first()
  types = [env.step(np.zeros(3, np.float32)) for _ in range(1000)]
  assert all(t.mid() for t in types[:-1]) and types[-1].last()
  assert types[-1].discount == 1  # a time limit: the critic bootstraps
  assert environments.episode_length(env) == 1000
  assert env.step(np.zeros(3, np.float32)).first()  # as dm_control: reset


class _Terminating(dm_env.Environment):
  """1-D observations; terminates (discount 0) after `steps` steps."""

  def __init__(self, steps):
    self._steps, self._t = steps, 0

  def reset(self):
    self._t = 0
    return dm_env.restart(np.zeros(1, np.float32))

  def step(self, action):
    self._t += 1
    obs = np.full(1, self._t, np.float32)
    if self._t == self._steps:
      return dm_env.termination(np.float32(0.5), obs)
    return dm_env.transition(np.float32(1.0), obs, np.float32(1.0))

  def observation_spec(self):
    return dm_env.specs.Array((1,), np.float32)

  def action_spec(self):
    return dm_env.specs.BoundedArray((2,), np.float32, -1, 1)


def test_a_replica_that_terminates_ends_the_episode_for_all():
  env = replicas.ReplicaEnvironment(
      [_Terminating(100), _Terminating(3)], temperature=0.1)
  assert env.action_spec().shape == (4,)
  env.reset()
  steps = [env.step(np.zeros(4, np.float32)) for _ in range(3)]
  assert [s.step_type for s in steps] == [dm_env.StepType.MID] * 2 + [
      dm_env.StepType.LAST]
  assert steps[-1].discount == 0  # the product: the episode terminated
  np.testing.assert_array_equal(steps[-1].observation, [3, 3])
  assert env.step(np.zeros(4, np.float32)).first()  # both reset together


@pytest.mark.parametrize('task,fragments', [
    ('stand-x0', ["'stand-x0'", "'-x0'", 'from 1 to 16']),
    ('stand-x-1', ["'stand-x-1'", "'-x-1'", 'from 1 to 16']),
    ('stand-x1.5', ["'-x1.5'", 'an integer from 1 to 16']),
    ('stand-xabc', ["'-xabc'", 'e.g. stand-x3']),
    ('stand-x03', ["'-x03'", '-xK']),
    ('stand-x17', ['17 replicas', 'at most 16']),
    ('stnd-x3', ["'stnd' (in 'stnd-x3')", 'stand, walk, run', '<task>-xK']),
    ('swing-up', ["'swing' (in 'swing-up')", 'stand, walk']),
])
def test_bad_replica_spelling_is_one_line(task, fragments):
  with pytest.raises(environments.UnknownTaskError) as info:
    environments.make_environment('humanoid', task, seed=0)
  message = str(info.value)
  assert '\n' not in message and "domain 'humanoid'" in message
  for fragment in fragments:
    assert fragment in message, message
  with pytest.raises(suites.SuiteError) as info:
    suites.resolve_tasks(None, f'humanoid-{task}')
  assert '\n' not in str(info.value) and fragments[0] in str(info.value)


@pytest.mark.parametrize('value', [0.0, -0.1, math.inf, math.nan])
def test_bad_temperature_is_one_line(value):
  with pytest.raises(runs.RunOptionsError) as info:
    runs.RunOptions(domain='cartpole', task='balance-x2',
                    replica_temperature=value)
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'--replica_temperature={value}: must be a '
                            'finite number > 0')


def _run_local(*args, timeout=120):
  return subprocess.run([sys.executable, RUN_LOCAL, *args], cwd=REPO,
                        env=dict(os.environ, MUJOCO_GL='egl'),
                        capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc):
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  return lines[0]


@pytest.mark.parametrize('args,fragment', [
    (['--task=balance-x0'], "'-x0' must be -xK"),
    (['--task=balance-x2', '--replica_temperature=0'],
     '--replica_temperature=0.0: must be a finite number > 0'),
], ids=['count', 'temperature'])
def test_the_runner_refuses_bad_replicas_in_one_line(tmp_path, args,
                                                     fragment):
  line = _one_error_line(_run_local(
      '--domain=cartpole', '--single_process', f'--workdir={tmp_path}/run',
      *args))
  assert fragment in line
  assert not os.path.exists(tmp_path / 'run')


def test_suites_name_replicated_tasks():
  assert suites.resolve_tasks(None, 'humanoid-stand-x3,cartpole-swingup') == [
      ('humanoid', 'stand-x3'), ('cartpole', 'swingup')]
  assert suites.resolve_tasks('fig5', None) == [
      ('humanoid', 'stand-x1'), ('humanoid', 'stand-x3'),
      ('humanoid', 'stand-x5')]
  paper = suites.resolve_tasks('paper', None)
  assert paper == [t for t in dm_suite.ALL_TASKS if t[0] != 'lqr']
  assert len(paper) == 49
  for task in (('humanoid_CMU', 'walk'), ('dog', 'fetch'),
               ('humanoid', 'stand')):
    assert task in paper


def test_the_suite_runner_runs_a_replicated_task(tmp_path):
  run = suites.Run('humanoid', 'stand-x3', 0,
                   str(tmp_path / 'humanoid-stand-x3' / 'seed0'))
  assert run.name == 'humanoid-stand-x3'
  runner = suites.SuiteRunner([run], max_actor_steps=10, parallel=1,
                              run_args=['--replica_temperature=0.2'])
  command = runner.command(run)
  assert command[2:4] == ['--domain=humanoid', '--task=stand-x3']
  assert f'--workdir={run.workdir}' in command
  assert command[-1] == '--replica_temperature=0.2'
  # launch/run_suite.py passes its --replica_temperature on, checked once.
  script = ('import sys; sys.argv = ["run_suite.py"] + sys.argv[1:]; '
            'sys.path.insert(0, "launch"); import run_suite; '
            'run_suite.FLAGS(sys.argv); print(run_suite.run_args())')
  proc = subprocess.run(
      [sys.executable, '-c', script, '--suite=fig5', '--config=small',
       '--replica_temperature=0.25'], cwd=REPO, capture_output=True,
      text=True, timeout=120, env=dict(os.environ, MUJOCO_GL='egl'))
  assert proc.returncode == 0, proc.stderr
  assert "'--replica_temperature=0.25'" in proc.stdout


def test_a_resume_with_another_temperature_is_refused(tmp_path):
  config = tiny.config()
  for task, refused in (('balance-x2', True), ('balance-x1', False),
                        ('balance', False)):
    workdir = str(tmp_path / task)
    first = runs.RunOptions(domain='cartpole', task=task, workdir=workdir)
    resume.write_run_config(workdir, first, config)
    os.makedirs(os.path.join(workdir, 'checkpoints', '100'))
    other = runs.RunOptions(domain='cartpole', task=task, workdir=workdir,
                            replica_temperature=0.5)
    if not refused:  # the temperature is unused there
      resume.check_resumable(workdir, other, config)
      continue
    with pytest.raises(resume.WorkdirMismatchError) as info:
      resume.check_resumable(workdir, other, config)
    assert '\n' not in str(info.value)
    assert 'replica_temperature: saved 0.1, now 0.5' in str(info.value)


STEPS = 300


@pytest.mark.slow  # a real run (~30 s) and its video
def test_a_short_run_on_two_replicas_and_its_video(tmp_path):
  workdir = str(tmp_path / 'run')
  common = ['--domain=cartpole', '--task=balance-x2', '--single_process',
            '--config=small', f'--workdir={workdir}', '--envs_per_actor=1',
            '--eval_episodes=1', '--eval_every=1000000']
  proc = _run_local(*common, f'--max_actor_steps={STEPS}',
                    *tiny.flags(min_replay_size=100), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'on cartpole-balance-x2' in proc.stdout
  with open(os.path.join(workdir, 'eval.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert [int(r['actor_steps']) for r in rows] == [STEPS]
  expected = float(rows[0]['eval_return_mean'])
  assert 0 <= expected <= 1000

  proc = subprocess.run(
      [sys.executable, '-m', 'wpo_agent.analysis.video', workdir,
       '--width=64', '--height=48'], cwd=REPO, capture_output=True, text=True,
      timeout=300, env=dict(os.environ, MUJOCO_GL='egl'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  episode = re.search(r'^episode 1: return (\S+) \(1000 steps\)$',
                      proc.stdout, re.M)
  wrote = re.search(r'^wrote (\S+) \(1001 frames, 128x48, 100 fps\)$',
                    proc.stdout, re.M)
  assert episode and wrote, proc.stdout
  assert os.path.basename(wrote.group(1)).startswith(
      f'cartpole-balance-x2-step{STEPS}-return')
  assert abs(float(episode.group(1)) - expected) < 1e-3  # the evaluator's
  with imageio.get_reader(wrote.group(1), format='FFMPEG') as reader:
    first = reader.get_next_data()
  assert first.shape == (48, 128, 3)
  # Side by side: each half a cartpole, from its own initial state.
  assert first[:, :64].std() > 0 and first[:, 64:].std() > 0

  line = _one_error_line(_run_local(*common, f'--max_actor_steps={2 * STEPS}',
                                    '--replica_temperature=0.5',
                                    *tiny.flags(min_replay_size=100)))
  assert 'replica_temperature: saved 0.1, now 0.5' in line
