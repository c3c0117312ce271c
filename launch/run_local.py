r"""Train WPO on a DeepMind Control Suite task on this machine.

Examples:
  python launch/run_local.py --domain=humanoid                 # distributed
  python launch/run_local.py --domain=cartpole --single_process \
      --max_actor_steps=20000 --config=small
  python launch/run_local.py --domain=walker --set batch_size=512 \
      --set bootstrap_aggregate=max
  python launch/run_local.py --domain=humanoid --task=stand-x3  # 3 replicas

Running again with the same --workdir resumes from its latest checkpoint.
Ctrl-C / SIGTERM checkpoints and exits 0.
"""

import contextlib
import dataclasses
import io
import os
import sys

os.environ.setdefault('MUJOCO_GL', 'egl')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from wpo_agent import cli
from wpo_agent import config as config_lib
from wpo_agent import device_replay
from wpo_agent import lifetime
from wpo_agent.distributed import hosts
# acme imports gym, which prints a 4-line deprecation notice to stderr; keep
# stderr for our own messages (a bad flag must read as one `error:` line).
with contextlib.redirect_stderr(io.StringIO()):
  from wpo_agent import environments
  from wpo_agent import resume
  from wpo_agent import runs

FLAGS = flags.FLAGS
_RUN = runs.RunOptions  # every run option's default lives there
flags.DEFINE_string('domain', _RUN.domain, 'Control Suite domain.')
flags.DEFINE_string('task', _RUN.task, 'Task; default: the domain\'s default '
                    'task (see wpo_agent/environments.py DEFAULT_TASKS). '
                    'TASK-xK: K replicas of it as one task, e.g. stand-x3 '
                    '(wpo_agent/replicas.py).')
flags.DEFINE_float('replica_temperature', _RUN.replica_temperature,
                   'A replicated task\'s (TASK-xK) reward is the smooth '
                   'minimum -T log(mean_i exp(-r_i / T)) of its replicas\' '
                   'rewards at this temperature T > 0.')
flags.DEFINE_bool('single_process', _RUN.single_process, 'Run actor, learner '
                  'and replay in one process (no Launchpad).')
flags.DEFINE_integer('max_actor_steps', _RUN.max_actor_steps,
                     'Stop after this many environment steps over all actors.')
flags.DEFINE_string('workdir', None, 'Output directory; default '
                    'runs/<domain>-<task>-seed<seed>.')
flags.DEFINE_integer('seed', _RUN.seed, 'Random seed.')
flags.DEFINE_string('config', 'acme', 'Config preset: '
                    f'{", ".join(sorted(config_lib.PRESETS))}.')
flags.DEFINE_integer('eval_every', _RUN.eval_every,
                     'Evaluate every this many actor steps.')
flags.DEFINE_integer('eval_episodes', _RUN.eval_episodes,
                     'Episodes per evaluation.')
flags.DEFINE_multi_string('set', [], 'Override a config field: FIELD=VALUE '
                          '(repeatable), e.g. --set batch_size=512.')
flags.DEFINE_integer('num_actors', _RUN.num_actors,
                     'Actor processes (distributed mode).')
flags.DEFINE_integer('envs_per_actor', _RUN.envs_per_actor, 'Environments '
                     'each actor process steps together, one policy call '
                     'per round (also the single-process actor).')
flags.DEFINE_bool('stagger_starts', _RUN.stagger_starts, 'Cut each '
                  'environment\'s first episode at a different length (as a '
                  'time limit), spreading the actors\' environments over one '
                  'episode; --nostagger_starts starts them all together.')
flags.DEFINE_enum('lp_launch_type', _RUN.lp_launch_type, runs.LAUNCH_TYPES,
                  'Launchpad launch type (distributed mode).')
flags.DEFINE_float('progress_every', _RUN.progress_every_s,
                   'Seconds between progress lines.')
flags.DEFINE_float('checkpoint_every', _RUN.checkpoint_every_s,
                   'Seconds between checkpoints.')
flags.DEFINE_bool('checkpoint_replay', _RUN.checkpoint_replay, 'Save the '
                  'replay buffer with each checkpoint (under WORKDIR/replay), '
                  'so a resumed run keeps its data; --nocheckpoint_replay '
                  'refills it instead.')
flags.DEFINE_bool('isolate_network', _RUN.isolate_network, 'Run a '
                  'single-host distributed program in its own network '
                  'namespace (only loopback), so that its unauthenticated '
                  'Reverb and courier ports cannot be reached from elsewhere '
                  '(README "Security").')
flags.DEFINE_integer('num_hosts', None, 'Hosts training as one learner; '
                     'default $JAX_NUM_PROCESSES, else 1. Every host runs the '
                     'same command (README "Several hosts").')
flags.DEFINE_integer('host_id', None, 'This host, 0..num_hosts-1; default '
                     '$JAX_PROCESS_ID, else 0.')
flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of host 0 for '
                    'jax.distributed (with --num_hosts > 1); default '
                    '$JAX_COORDINATOR_ADDRESS.')


class UsageError(Exception):
  """A bad flag value: printed as one line, exit code 2."""


def run_options() -> runs.RunOptions:
  """The flags as RunOptions (which validate them and resolve the task)."""
  run = runs.RunOptions(
      domain=FLAGS.domain, task=FLAGS.task, seed=FLAGS.seed,
      replica_temperature=FLAGS.replica_temperature,
      max_actor_steps=FLAGS.max_actor_steps, eval_every=FLAGS.eval_every,
      eval_episodes=FLAGS.eval_episodes, progress_every_s=FLAGS.progress_every,
      checkpoint_every_s=FLAGS.checkpoint_every,
      checkpoint_replay=FLAGS.checkpoint_replay,
      single_process=FLAGS.single_process, num_actors=FLAGS.num_actors,
      envs_per_actor=FLAGS.envs_per_actor,
      stagger_starts=FLAGS.stagger_starts, lp_launch_type=FLAGS.lp_launch_type,
      isolate_network=FLAGS.isolate_network, **_host_options())
  workdir = FLAGS.workdir or os.path.join(
      'runs', f'{run.domain}-{run.task}-seed{run.seed}')
  return dataclasses.replace(run, workdir=workdir)


def _host_options():
  """--num_hosts, --host_id, --coordinator_address, else JAX's variables."""
  address, num, host = hosts.environment_defaults()
  pick = lambda flag, env, default: (  # pylint: disable=g-long-lambda
      flag if flag is not None else env if env is not None else default)
  return dict(num_hosts=pick(FLAGS.num_hosts, num, _RUN.num_hosts),
              host_id=pick(FLAGS.host_id, host, _RUN.host_id),
              coordinator_address=pick(FLAGS.coordinator_address, address,
                                       _RUN.coordinator_address))


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if len(argv) > 1:
    raise UsageError(f'unexpected arguments {argv[1:]}; flags look like '
                     '--domain=cartpole')
  lifetime.stop_with_starter()  # started by run_suite.py: stop with it
  run = run_options()
  config = config_lib.make_config(
      FLAGS.config, **dict(config_lib.parse_override(s) for s in FLAGS.set))
  try:  # both runners check the workdir first: resume.write_run_config
    if run.single_process:
      from wpo_agent import single_process  # pylint: disable=g-import-not-at-top
      summary = single_process.train(run, config)
    else:
      summary = run_distributed(run, config)
  except (resume.WorkdirMismatchError, lifetime.WorkdirInUseError) as e:
    raise UsageError(str(e)) from None
  print_summary(summary)


def run_distributed(run, config):
  from wpo_agent.distributed import supervisor  # pylint: disable=g-import-not-at-top
  try:
    return supervisor.run(run, config)
  except supervisor.ProgramFailed as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


def print_summary(summary) -> None:
  ev = summary['last_eval_return']
  ev = f'{ev:.1f}' if ev is not None else 'n/a'
  state = ('stopped early (resume with the same command)'
           if summary['stopped_early'] else 'finished')
  wd = summary['workdir']
  if 'global_actor_steps' in summary:
    print(f'\nall hosts: {summary["global_actor_steps"]} actor steps',
          flush=True)
  print(f'\n{state}: {summary["domain"]}-{summary["task"]}, '
        f'{summary["actor_steps"]} actor steps, {summary["learner_steps"]} '
        f'learner steps, last eval return {ev}, {summary["elapsed_s"]} s\n'
        f'  eval curve: {wd}/eval.csv   learner metrics: {wd}/train.csv\n'
        f'  TensorBoard: tensorboard --logdir {wd}/tb   checkpoints: '
        f'{wd}/checkpoints\n'
        f'  plot: python -m wpo_agent.analysis.plot {wd} --out '
        f'{wd}/curve.png',
        flush=True)


def run():
  try:
    app.run(main, flags_parser=cli.parse_flags)
  except (UsageError, config_lib.ConfigError, runs.RunOptionsError,
          environments.UnknownTaskError, device_replay.BufferTooLargeError,
          flags.Error) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  run()
