"""python -m wpo_agent.analysis.video as a user runs it: the video of a real
short run, read back, and one `error:` line for bad input.

The run (launch/run_local.py, ~30 s) evaluates once, at its end, and then
saves its checkpoint: so eval.csv's one row is the return of the run's own
evaluator for the checkpoint's parameters and the evaluator's seed, which the
video's default is.
"""

import csv
import os
import re
import subprocess
import sys

import imageio
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_LOCAL = os.path.join(REPO, 'launch', 'run_local.py')
STEPS = 300  # actor steps of the run; the checkpoint's step


def video(*args, env=None, timeout=300):
  env = dict(os.environ, MUJOCO_GL='egl', **(env or {}))
  return subprocess.run(
      [sys.executable, '-m', 'wpo_agent.analysis.video', *args], cwd=REPO,
      env=env, capture_output=True, text=True, timeout=timeout)


def error_lines(proc):
  assert 'Traceback' not in proc.stderr, proc.stderr
  return [l for l in proc.stderr.splitlines() if l.startswith('error:')]


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  # min_replay_size 100, spi 128 = batch 128: ~150 SGD steps, so the target
  # policy (copied every 50) that the evaluator and the video act with is
  # not the online one.
  workdir = str(tmp_path_factory.mktemp('video') / 'run')
  proc = subprocess.run(
      [sys.executable, RUN_LOCAL, '--domain=cartpole', '--task=swingup',
       '--single_process', '--config=small', f'--max_actor_steps={STEPS}',
       '--eval_every=1000000', '--eval_episodes=1', '--envs_per_actor=1',
       '--set', 'min_replay_size=100', '--set', 'samples_per_insert=128',
       f'--workdir={workdir}'],
      cwd=REPO, env=dict(os.environ, MUJOCO_GL='egl'), capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def eval_return(run_dir):
  with open(os.path.join(run_dir, 'eval.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert [int(r['actor_steps']) for r in rows] == [STEPS]
  return float(rows[0]['eval_return_mean'])


@pytest.mark.slow
def test_video_of_a_run(run_dir):
  proc = video(run_dir, '--width=64', '--height=48')
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  episode = re.search(r'^episode 1: return (\S+) \((\d+) steps\)$', out, re.M)
  mean = re.search(r'^return (\S+) \(mean of 1 episode', out, re.M)
  wrote = re.search(r'^wrote (\S+) \((\d+) frames, 64x48, 100 fps\)$', out,
                    re.M)
  assert episode and mean and wrote, out
  path = wrote.group(1)
  assert os.path.dirname(path) == os.path.join(run_dir, 'videos')
  assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
  # The default name: the checkpoint's actor step and the return, rounded.
  assert os.path.basename(path) == (
      f'cartpole-swingup-step{STEPS}-return{mean.group(1)}.mp4')
  # The run's own evaluator, same parameters and seed: the same episode.
  expected = eval_return(run_dir)
  assert abs(float(episode.group(1)) - expected) < 1e-3
  assert mean.group(1) == f'{expected:.1f}'
  assert 0 <= expected <= 1000

  # 1000 steps (10 s at a control timestep of 0.01): the state after the
  # reset and after every step, 1001 frames at 100 fps.
  assert int(episode.group(2)) == 1000
  assert int(wrote.group(2)) == 1001
  with imageio.get_reader(path, format='FFMPEG') as reader:
    assert reader.get_meta_data()['fps'] == 100
    # Not list(reader): its len() is sys.maxsize, which list() preallocates.
    frames = [frame for frame in reader]
  assert len(frames) == 1001
  assert {f.shape for f in frames} == {(48, 64, 3)}
  assert frames[0].std() > 0  # not a blank image
  assert (frames[0] != frames[-1]).any()  # the cart moved


@pytest.mark.parametrize('args,fragments', [
    (['--episodes=0', '{tmp}/run'], ['--episodes=0', '>= 1']),
    (['--width=63', '{tmp}/run'], ['--width=63', 'even integer']),
    (['--fps=0', '{tmp}/run'], ['--fps=0', '> 0']),
    (['--out=x.avi', '{tmp}/run'], ['--out=x.avi', '.mp4']),
    (['--episodes=two', '{tmp}/run'], ['--episodes', "'two'"]),
    (['{tmp}/missing'], ['no such run directory']),
    (['{tmp}/empty'], ['no config.json']),
    (['{tmp}/no_checkpoint'], ['no checkpoint']),
], ids=['episodes', 'width', 'fps', 'out', 'episodes-type', 'missing-dir',
        'not-a-run', 'no-checkpoint'])
def test_bad_input_is_one_error_line(tmp_path, args, fragments):
  # Refused before anything is imported or read: a second each.
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'no_checkpoint' / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'no_checkpoint' / 'config.json').write_text('{}')
  (tmp_path / 'run').mkdir()
  proc = video(*[a.replace('{tmp}', str(tmp_path)) for a in args],
               timeout=60)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  for fragment in fragments:
    assert fragment in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize('camera', ['2', 'nope'])
def test_unknown_camera(run_dir, camera):
  proc = video(run_dir, f'--camera={camera}', timeout=120)
  assert proc.returncode == 2, proc.stderr
  [line] = error_lines(proc)
  assert f'--camera={camera}' in line
  assert "0 ('fixed'), 1 ('lookatcart'), -1 (the free camera)" in line


@pytest.mark.slow
def test_egl_failure_retries_with_osmesa(run_dir):
  # No EGL vendor library: egl cannot open a display.
  proc = video(run_dir, '--width=64', '--height=48',
               env=dict(__EGL_VENDOR_LIBRARY_FILENAMES='/nonexistent.json'))
  retry = 'retrying with MUJOCO_GL=osmesa'
  if retry not in proc.stderr:
    pytest.skip(f'EGL did not fail here: {proc.stderr[-300:]}')
  assert [l for l in proc.stderr.splitlines() if retry in l][0].startswith(
      'warning: rendering with MUJOCO_GL=egl failed')
  if proc.returncode == 0:  # this machine has libOSMesa
    assert re.search(r'^wrote \S+\.mp4 \(1001 frames', proc.stdout, re.M)
    return
  assert proc.returncode == 1, proc.stderr
  [line] = error_lines(proc)
  assert 'MUJOCO_GL=egl (' in line and 'then MUJOCO_GL=osmesa (' in line
  assert 'EGL driver' in line and 'libOSMesa' in line
