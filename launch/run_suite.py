r"""Train WPO on a suite of Control Suite tasks and seeds, P runs at a time.

Examples:
  python launch/run_suite.py --suite=quick --seeds=0,1,2 \
      --max_actor_steps=100000 --parallel=2 --single_process
  python launch/run_suite.py --tasks=walker-walk,cheetah-run --seeds=0 \
      --max_actor_steps=2000 --config=small --single_process
  python launch/run_suite.py --suite=fig5 --seeds=0,1,2 \
      --max_actor_steps=1000000   # humanoid-stand-x1, -x3, -x5

Each (task, seed) is one `launch/run_local.py` run in WORKDIR/<domain>-<task>/
seed<seed> (its output in suite_run.log there). Rerunning the same command skips
finished runs and resumes stopped ones. Ctrl-C / SIGTERM checkpoints every
running run and exits 0. Suites: wpo_agent/analysis/suites.py. Once every run
has ended (finished or failed), the seed-aggregated report (`python -m
wpo_agent.analysis.report`, with docs/baselines.csv) is written to
WORKDIR/report.
"""

import contextlib
import io
import os
import signal
import sys

os.environ.setdefault('MUJOCO_GL', 'egl')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from wpo_agent import cli  # pylint: disable=g-import-not-at-top
from wpo_agent import config as config_lib
# dm_control -> acme -> gym prints a deprecation notice to stderr on import;
# a bad flag must read as one `error:` line (as in run_local.py).
with contextlib.redirect_stderr(io.StringIO()):
  from wpo_agent import replicas
  from wpo_agent import runs as runs_lib
  from wpo_agent.analysis import suites

FLAGS = flags.FLAGS
flags.DEFINE_string('suite', None, f'One of {", ".join(suites.SUITES)}.')
flags.DEFINE_string('tasks', None, 'Instead of --suite: domain-task,... '
                    '(e.g. cartpole-swingup,walker-walk; humanoid-stand-x3: '
                    '3 replicas as one task).')
flags.DEFINE_string('seeds', '0', 'Comma-separated seeds.')
flags.DEFINE_integer('max_actor_steps', None, 'Actor steps of every run.')
flags.DEFINE_integer('parallel', 1, 'Runs at a time.')
flags.DEFINE_string('config', 'acme', 'Config preset: '
                    f'{", ".join(sorted(config_lib.PRESETS))}.')
flags.DEFINE_multi_string('set', [], 'Override a config field in every run: '
                          'FIELD=VALUE (repeatable).')
flags.DEFINE_bool('single_process', False, 'Each run in one process (no '
                  'Launchpad); else the distributed program per run.')
flags.DEFINE_integer('eval_every', None, 'Passed on to each run.')
flags.DEFINE_integer('eval_episodes', None, 'Passed on to each run.')
flags.DEFINE_integer('envs_per_actor', None, 'Passed on to each run (default: '
                     "run_local.py's).")
flags.DEFINE_float('replica_temperature', None, 'Passed on to each run '
                   "(replicated tasks' smooth minimum; default: "
                   "run_local.py's).")
flags.DEFINE_string('workdir', None, 'Suite folder; default '
                    'runs/suites/<suite> (runs/suites/tasks with --tasks).')
flags.DEFINE_float('status_every', 60.0, 'Seconds between status tables.')


class UsageError(Exception):
  """A bad flag value: printed as one line, exit code 2."""


def run_args():
  """The flags every run gets, after checking the config once here."""
  config_lib.make_config(
      FLAGS.config, **dict(config_lib.parse_override(s) for s in FLAGS.set))
  out = [f'--config={FLAGS.config}'] + [f'--set={s}' for s in FLAGS.set]
  if FLAGS.single_process:
    out.append('--single_process')
  epa = FLAGS.envs_per_actor
  if epa is not None and not 1 <= epa <= runs_lib.MAX_ENVS_PER_ACTOR:
    raise UsageError(f'--envs_per_actor={epa}: must be an integer from 1 to '
                     f'{runs_lib.MAX_ENVS_PER_ACTOR}')
  if FLAGS.replica_temperature is not None:
    try:
      replicas.check_temperature(FLAGS.replica_temperature)
    except ValueError as e:
      raise UsageError(str(e)) from None
  for name in ('eval_every', 'eval_episodes', 'envs_per_actor',
               'replica_temperature'):
    if getattr(FLAGS, name) is not None:
      out.append(f'--{name}={getattr(FLAGS, name)}')
  return out


def main(argv):
  if len(argv) > 1:
    raise UsageError(f'unexpected arguments {argv[1:]}')
  tasks = suites.resolve_tasks(FLAGS.suite, FLAGS.tasks)
  seeds = suites.parse_seeds(FLAGS.seeds)
  if FLAGS.max_actor_steps is None or FLAGS.max_actor_steps < 1:
    raise UsageError('--max_actor_steps: give an integer >= 1')
  if FLAGS.parallel < 1:
    raise UsageError(f'--parallel={FLAGS.parallel}: must be >= 1')
  args = run_args()
  root = FLAGS.workdir or os.path.join('runs', 'suites', FLAGS.suite or 'tasks')
  runs = [suites.Run(domain, task, seed,
                     os.path.join(root, f'{domain}-{task}', f'seed{seed}'))
          for domain, task in tasks for seed in seeds]
  runner = suites.SuiteRunner(
      runs, max_actor_steps=FLAGS.max_actor_steps, parallel=FLAGS.parallel,
      run_args=args, status_every_s=FLAGS.status_every,
      say=lambda text: print(text, flush=True))
  signal.signal(signal.SIGINT, runner.stop)
  signal.signal(signal.SIGTERM, runner.stop)
  print(f'Suite: {len(runs)} runs ({len(tasks)} tasks x {len(seeds)} seeds), '
        f'{FLAGS.parallel} at a time, in {os.path.abspath(root)}', flush=True)
  ok = runner.run()
  if not runner.stopping:
    write_report(root)
  sys.exit(0 if ok else 1)


def write_report(root: str) -> None:
  """The suite's report; a suite without evaluations yet gets a line why."""
  from wpo_agent.analysis import report  # pylint: disable=g-import-not-at-top
  from wpo_agent.analysis import results  # pylint: disable=g-import-not-at-top
  # rliable logs a line per estimate at INFO, which app.run shows.
  logging.set_verbosity(logging.WARNING)
  baselines = os.path.join(REPO, 'docs', 'baselines.csv')
  try:
    _, written = report.write_report(
        [root], os.path.join(root, 'report'),
        baselines_path=baselines if os.path.isfile(baselines) else None)
  except results.ResultsError as e:
    print(f'No report: {e}', flush=True)
    return
  print('Report: ' + ', '.join(written), flush=True)


if __name__ == '__main__':
  try:
    app.run(main, flags_parser=cli.parse_flags)
  except (UsageError, suites.SuiteError, config_lib.ConfigError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
