r"""A video of a run's policy: its newest checkpoint, acting deterministically.

  python -m wpo_agent.analysis.video RUN_DIR [--episodes 1] [--out FILE.mp4] \
      [--width 320] [--height 240] [--camera 0] [--fps FPS] [--seed SEED]

Loads the newest checkpoint in RUN_DIR (task and network sizes from its
config.json), acts with the mode of the TARGET policy, as the run's evaluator
does (the same `acting.WPOActor` and `loops.Evaluator` episode loop), and
renders every state with dm_control's `physics.render`: the state after each
reset and after each step, so an episode of T steps is T + 1 frames (cartpole:
1001). All episodes go into one MP4, back to back, played at real time
(`--fps` default: 1 / the task's control timestep). Default output:
RUN_DIR/videos/<domain>-<task>-step<S>-return<R>.mp4, S the checkpoint's actor
step and R the mean return over the episodes, to 1 decimal. The default
`--seed` is the evaluator's environment seed (seeds.evaluator_seeds). A
replicated task (<task>-xK, wpo_agent/replicas.py) shows its K replicas side
by side, each --width wide: frames of K x width by height.

Rendering uses MUJOCO_GL (default egl); if egl fails, the command runs again
with MUJOCO_GL=osmesa, saying so in one line. Bad input is one `error:` line
and exit code 2; no working renderer is one `error:` line and exit code 1.
"""

import argparse
import dataclasses
import math
import os
import re
import subprocess
import sys
import warnings
from typing import Any, List, Optional, Sequence

from wpo_agent import workdir as workdir_lib

# dm_control and everything that imports it (JAX, the agent's modules) are
# imported inside the functions: dm_control picks its OpenGL backend from
# MUJOCO_GL once, at its import, and bad input is refused in a second.

MAX_SIZE = 4096  # pixels, each of --width and --height
# Set in the process that retries with osmesa: what egl failed with.
_EGL_FAILURE_ENV = 'WPO_VIDEO_EGL_FAILURE'
_NEEDS = ('videos need a GPU with an EGL driver, or the OSMesa library '
          '(libOSMesa, e.g. apt-get install libosmesa6)')


class VideoError(Exception):
  """Bad input: one `error:` line, exit code 2."""


class RenderError(Exception):
  """No rendering backend works here: exit code 1 (after the osmesa retry)."""


class _Parser(argparse.ArgumentParser):
  """Reports a bad argument as ONE line on stderr (no usage block), exit 2."""

  def error(self, message):
    self.exit(2, f'error: {message} (see --help)\n')


def _parser() -> _Parser:
  parser = _Parser(prog='python -m wpo_agent.analysis.video',
                   description=__doc__.split('\n\n')[0])
  parser.add_argument('run_dir', metavar='RUN_DIR')
  parser.add_argument('--episodes', type=int, default=1,
                      help='episodes, back to back in one file (default 1)')
  parser.add_argument('--out', default=None, metavar='FILE.mp4',
                      help='default: RUN_DIR/videos/<domain>-<task>-step<S>-'
                      'return<R>.mp4')
  parser.add_argument('--width', type=int, default=320, help='default 320')
  parser.add_argument('--height', type=int, default=240, help='default 240')
  parser.add_argument('--camera', default='0',
                      help='camera index or name; -1: the free camera '
                      '(default 0)')
  parser.add_argument('--fps', type=float, default=None,
                      help='default: 1 / control timestep (real time)')
  parser.add_argument('--seed', type=int, default=None,
                      help="environment seed; default: the run's evaluator's")
  return parser


def check_args(args: argparse.Namespace) -> None:
  """Raises VideoError for option values outside what is allowed."""
  if args.episodes < 1:
    raise VideoError(f'--episodes={args.episodes}: must be an integer >= 1')
  for name in ('width', 'height'):
    value = getattr(args, name)
    # H.264 in yuv420p needs even sizes; odd ones would be rescaled.
    if not 16 <= value <= MAX_SIZE or value % 2:
      raise VideoError(f'--{name}={value}: must be an even integer from 16 '
                       f'to {MAX_SIZE}')
  if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
    raise VideoError(f'--fps={args.fps}: must be a number > 0')
  if args.seed is not None and not 0 <= args.seed < 2**32:
    raise VideoError(f'--seed={args.seed}: must be an integer in [0, 2**32)')
  if args.out is not None and not args.out.endswith('.mp4'):
    raise VideoError(f'--out={args.out}: must be a file name ending in .mp4')


def check_run_dir(run_dir: str) -> None:
  """Raises VideoError unless RUN_DIR is a run's workdir with a checkpoint."""
  if not os.path.isdir(run_dir):
    raise VideoError(f'{run_dir}: no such run directory (give the --workdir '
                     'of a training run)')
  paths = workdir_lib.Workdir(run_dir)
  if not os.path.isfile(paths.config):
    raise VideoError(f'{run_dir}: no {os.path.basename(paths.config)} (not '
                     'the --workdir of a training run)')
  if not paths.checkpoint_steps():
    raise VideoError(f'{run_dir}: no checkpoint in {paths.checkpoints} (a run '
                     'saves one every --checkpoint_every seconds and when it '
                     'stops)')


def _one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split()) or 'no message'
  return f'{type(error).__name__}: {text}'[:300]


def _import_renderer() -> None:
  """Imports dm_control's OpenGL backend, chosen by MUJOCO_GL at its import
  (the egl backend opens its display right then): RenderError if it fails."""
  os.environ.setdefault('MUJOCO_GL', 'egl')
  try:
    # pylint: disable=g-import-not-at-top,unused-import
    from dm_control import _render
  except Exception as e:  # pylint: disable=broad-except
    raise RenderError(_one_line(e)) from None


def load_run(run_dir: str, seed: Optional[int]):
  """(RunOptions, WPOConfig, environment, (environment seed, policy seed))
  of RUN_DIR's config.json; `seed` (None: the evaluator's) seeds the
  environment."""
  # pylint: disable=g-import-not-at-top
  from wpo_agent import config as config_lib
  from wpo_agent import environments
  from wpo_agent import runs
  from wpo_agent import seeds
  paths = workdir_lib.Workdir(run_dir)
  try:
    saved = paths.read_config()
    # Fields this version does not know (a newer writer) are left out.
    known = lambda cls, d: {f.name: d[f.name] for f in dataclasses.fields(cls)
                            if f.name in d}
    run = runs.RunOptions(**dict(known(runs.RunOptions, saved['run']),
                                 workdir=run_dir))
    config = config_lib.WPOConfig(**known(config_lib.WPOConfig,
                                          saved['config']))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise VideoError(f'{paths.config}: not a usable run config '
                     f'({_one_line(e)})') from None
  env_seed, policy_seed = seeds.evaluator_seeds(run)
  seed = env_seed if seed is None else seed
  return run, config, environments.make_environment(
      run.domain, run.task, seed=seed,
      replica_temperature=run.replica_temperature), (seed, policy_seed)


def camera_id(physics, text: str, task: str) -> Any:
  """--camera as physics.render takes it: an index, or a camera's name."""
  names = [physics.model.id2name(i, 'camera')
           for i in range(physics.model.ncam)]
  if re.fullmatch(r'-?\d+', text) and -1 <= int(text) < len(names):
    return int(text)
  if text and text in names:  # unnamed cameras have the name ''
    return text
  listed = ', '.join(f'{i} ({n!r})' for i, n in enumerate(names))
  raise VideoError(f'--camera={text}: unknown camera of {task}; allowed: '
                   f'{listed + ", " if listed else ""}-1 (the free camera)')


def make_render(physics: Sequence[Any], *, width: int, height: int,
                camera: Any):
  """() -> uint8 [height, K x width, 3]: the K `physics` (replicas, or one)
  side by side; renders one frame now, RenderError if that fails (no GL
  context can be made)."""
  for one in physics:
    size = one.model.vis.global_
    # The offscreen buffer is made at the first render, at the model's size
    # (often 640x480); a larger frame would not fit in it.
    size.offwidth, size.offheight = (max(size.offwidth, width),
                                     max(size.offheight, height))
  import numpy as np  # pylint: disable=g-import-not-at-top

  def render():
    frames = [one.render(height=height, width=width, camera_id=camera)
              for one in physics]
    return frames[0] if len(frames) == 1 else np.concatenate(frames, axis=1)

  try:
    render()
  except Exception as e:  # pylint: disable=broad-except
    raise RenderError(_one_line(e)) from None
  return render


def restore_policy(run_dir: str, run, config, environment):
  """(policy network, target policy params, checkpoint step, learner step)
  of the newest checkpoint in RUN_DIR."""
  # pylint: disable=g-import-not-at-top
  import jax
  from wpo_agent import checkpointing
  from wpo_agent import environments
  from wpo_agent import learning
  from wpo_agent import networks as networks_lib
  networks = networks_lib.make_networks_from_spec(
      environments.environment_spec(environment), **config.network_kwargs())
  checkpointer = checkpointing.open_checkpointer(run_dir,
                                                 num_hosts=run.num_hosts)
  step = checkpointer.latest_step()
  like = learning.init_training_state(networks, config, jax.random.PRNGKey(0))
  try:
    state, _ = checkpointer.restore(like, step)
  except Exception as e:  # pylint: disable=broad-except
    # Orbax raises many types (a shape mismatch, a damaged file).
    raise VideoError(f'{checkpointer.directory}/{step}: cannot restore it '
                     f'into the networks config.json describes ({_one_line(e)})'
                     ) from None
  finally:
    checkpointer.close()
  # What the evaluator acts with: the learner serves the target policy.
  return networks.policy, state.target_policy_params, step, int(state.steps)


class _Recorder:
  """The environment as loops.Evaluator steps it (reset, step), handing a
  frame of the state after every reset and every step to `add_frame`."""

  def __init__(self, environment, render, add_frame):
    self._environment = environment
    self._render = render
    self._add_frame = add_frame
    self.episode_steps: List[int] = []

  def reset(self):
    timestep = self._environment.reset()
    self.episode_steps.append(0)
    self._add_frame(self._render())
    return timestep

  def step(self, action):
    timestep = self._environment.step(action)
    self.episode_steps[-1] += 1
    self._add_frame(self._render())
    return timestep


def record(environment, render, policy, params, *, episodes: int,
           policy_seed: int, path: str, fps: float):
  """Writes `episodes` episodes of the deterministic policy to the MP4
  `path`, back to back; returns (their returns, their steps)."""
  # pylint: disable=g-import-not-at-top
  import imageio
  from wpo_agent import acting
  from wpo_agent import loops
  # The evaluator's actor (Builder.evaluator) on the restored parameters.
  actor = acting.WPOActor(
      policy, acting.VariableClient(
          acting.StaticVariableSource(policy=params), 'policy', 1),
      seed=policy_seed, deterministic=True)
  # macro_block_size=2: sizes are even (check_args), so none is rescaled.
  with imageio.get_writer(path, format='FFMPEG', mode='I', fps=fps,
                          codec='libx264', macro_block_size=2) as writer, \
      warnings.catch_warnings():
    # The writer starts ffmpeg at its first frame; JAX warns of any fork,
    # but this one execs ffmpeg at once and never runs JAX's threads.
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called',
                            category=RuntimeWarning)
    recorder = _Recorder(environment, render, writer.append_data)
    evaluator = loops.Evaluator(
        recorder, actor, episodes=episodes, every=1, logger=None,
        start_actor_steps=0, last_actor_steps=None, last_return=None)
    returns = evaluator.returns()
  return [float(r) for r in returns], recorder.episode_steps


def _make_video(args: argparse.Namespace) -> int:
  """Loads, renders and writes the video; prints what it wrote."""
  run, config, environment, (seed, policy_seed) = load_run(args.run_dir,
                                                           args.seed)
  name = f'{run.domain}-{run.task}'
  from wpo_agent import replicas  # pylint: disable=g-import-not-at-top
  physics = replicas.physics_of(environment)
  render = make_render(physics, width=args.width, height=args.height,
                       camera=camera_id(physics[0], args.camera, name))
  policy, params, step, learner_steps = restore_policy(
      args.run_dir, run, config, environment)
  fps = args.fps or 1.0 / environment.control_timestep()
  print(f'{name}: checkpoint at actor step {step} (learner step '
        f'{learner_steps}), deterministic policy, {args.episodes} '
        f'episode(s) from environment seed {seed}', flush=True)
  folder = (os.path.dirname(args.out) if args.out
            else workdir_lib.Workdir(args.run_dir).videos)
  os.makedirs(folder or '.', exist_ok=True)
  # The return, part of the name, is known only at the end.
  partial = os.path.join(folder, f'.video-{os.getpid()}.partial.mp4')
  try:
    returns, steps = record(
        environment, render, policy, params, episodes=args.episodes,
        policy_seed=policy_seed, path=partial, fps=fps)
    mean = sum(returns) / len(returns)
    path = args.out or os.path.join(
        folder, f'{name}-step{step}-return{mean:.1f}.mp4')
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  for i, (ret, num) in enumerate(zip(returns, steps)):
    print(f'episode {i + 1}: return {ret:.3f} ({num} steps)')
  print(f'return {mean:.1f} (mean of {len(returns)} episode(s))')
  print(f'wrote {path} ({sum(steps) + len(steps)} frames, '
        f'{args.width * len(physics)}x{args.height}, {fps:g} fps)')
  return 0


def _render_failed(argv: Sequence[str], reason: str) -> int:
  """egl failed: the same command again with osmesa (dm_control's backend
  is fixed once imported, hence a new process). Else one `error:` line."""
  backend = os.environ['MUJOCO_GL']
  if backend == 'egl':
    print(f'warning: rendering with MUJOCO_GL=egl failed ({reason}); '
          'retrying with MUJOCO_GL=osmesa', file=sys.stderr, flush=True)
    # dm_control's egl backend set PYOPENGL_PLATFORM=egl in this process's
    # environment, which its osmesa backend refuses.
    env = dict(os.environ, MUJOCO_GL='osmesa', PYOPENGL_PLATFORM='osmesa',
               **{_EGL_FAILURE_ENV: reason})
    return subprocess.call(
        [sys.executable, '-m', 'wpo_agent.analysis.video', *argv], env=env)
  tried = f'MUJOCO_GL={backend} ({reason})'
  if os.environ.get(_EGL_FAILURE_ENV):
    tried = f'MUJOCO_GL=egl ({os.environ[_EGL_FAILURE_ENV]}), then {tried}'
  print(f'error: cannot render: tried {tried}; {_NEEDS}', file=sys.stderr)
  return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
  """CLI entry point; returns the exit code (2: bad input, 1: no renderer)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    args = _parser().parse_args(argv)
  except SystemExit as e:  # --help (0) or a bad argument (2): return, not exit
    return e.code if isinstance(e.code, int) else 2
  try:
    check_args(args)
    check_run_dir(args.run_dir)
    # The policy acts on the CPU anyway (acting.py); this keeps JAX from
    # taking an accelerator's memory, which a training run may be using.
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    _import_renderer()
    return _make_video(args)
  except RenderError as e:
    return _render_failed(argv, str(e))
  except (VideoError, OSError) as e:  # OSError: e.g. an unwritable --out
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
