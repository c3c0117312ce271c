"""Distributed program throughput: actor scaling, the realised data ratio, replay backends.

Launches `launch/run_local.py` (local multi-processing) and reads the counter
snapshot the step limiter writes to `<workdir>/control/progress.json`, and the
learner's rows in `<workdir>/train.csv` that fall inside the measured window.

  scaling: 1 vs 2 actors with the learner throttled by a tiny samples-per-insert
           (--scaling_spi, default 0.05)
           (it needs one SGD step per `batch_size / spi` inserts, so it mostly
           sleeps on the rate limiter); reports aggregate actor steps/s.
  ratio:   the learner is the bottleneck (spi = 32, batch 32, small networks;
           with a --config other than `small`, that preset's own spi, batch and
           networks); per run reports learner updates/s, actor steps/s,
           realised samples-per-insert = d(learner_steps) * B / d(actor_steps)
           over the steady-state window vs the configured value, the learner's
           own `samples_per_insert` column (device backend) and the mean of its
           `data_wait_fraction` column.

--backend both runs the ratio measurement on both replay backends, interleaved
(reverb, device, reverb, device, ... for --repeats), so that both see the same
machine load; per backend the medians over its repeats are reported.

Usage: .venv/bin/python bench/bench_distributed.py [--seconds 60] [--json [PATH]]
         [--backend reverb|device|both] [--repeats 1] [--config small]
         [--num_actors 2] [--set FIELD=VALUE ...] [--workdir DIR] [--skip-scaling]
         [--skip-ratio] [--envs_per_actor E]
The scaling runs also report each actor process's resident memory (RSS).
"""

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import common

SMALL = ['--set=policy_layer_sizes=64,64', '--set=critic_layer_sizes=64,64',
         '--set=num_action_samples=10', '--set=min_replay_size=1000']
BACKENDS = ('reverb', 'device')
# Metrics of one ratio run whose medians are reported per backend.
METRICS = ('actor_steps_per_s', 'learner_updates_per_s', 'realised_spi',
           'learner_spi', 'data_wait_fraction')


def _progress(workdir):
  try:
    with open(os.path.join(workdir, 'control', 'progress.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _tail(path, lines=25):
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def _learner_rows(workdir, t0, t1):
  """train.csv rows logged between unix times t0 and t1."""
  try:
    with open(os.path.join(workdir, 'train.csv'), newline='') as f:
      rows = list(csv.DictReader(f))
  except OSError:
    return []
  return [r for r in rows if t0 <= _float(r.get('time')) <= t1]


def _float(text):
  try:
    return float(text)
  except (TypeError, ValueError):
    return float('nan')


def _column(rows, name):
  return [v for v in (_float(r.get(name)) for r in rows) if v == v]


class _Program:
  """One run_local.py process; its output goes to a log beside its workdir
  so that a failed run can be reported with the program's own error."""

  def __init__(self, cmd, workdir_root):
    if workdir_root:
      os.makedirs(workdir_root, exist_ok=True)
    base = tempfile.mkdtemp(prefix='wpo-bench-', dir=workdir_root)
    self.workdir = os.path.join(base, 'run')
    self.log = os.path.join(base, 'run_local.log')
    with open(self.log, 'w') as log:
      self.proc = subprocess.Popen(
          cmd + [f'--workdir={self.workdir}'], stdout=log,
          stderr=subprocess.STDOUT, env=dict(os.environ, MUJOCO_GL='egl'))

  def fail(self, what):
    raise RuntimeError(f'{what} (workdir {self.workdir}); end of '
                       f'{self.log}:\n{_tail(self.log)}')

  def sleep(self, seconds):
    """Sleeps, failing as soon as the program exits."""
    end = time.time() + seconds
    while time.time() < end:
      if self.proc.poll() is not None:
        self.fail(f'program exited with code {self.proc.returncode}')
      time.sleep(min(0.5, max(0.0, end - time.time())))

  def stop(self):
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGINT)
    try:
      self.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      self.proc.kill()


def measure(num_actors, spi, batch, seconds, warmup_s, args, extra=(),
            backend=None):
  """Runs one program and returns its rates over the steady-state window."""
  cmd = [sys.executable, os.path.join(common.ROOT, 'launch', 'run_local.py'),
         f'--domain={args.domain}', f'--task={args.task}',
         f'--config={args.config}', f'--num_actors={num_actors}',
         '--max_actor_steps=100000000', '--eval_every=100000000',
         '--progress_every=1000', '--nocheckpoint_replay',
         f'--set=samples_per_insert={spi}', f'--set=batch_size={batch}']
  cmd += list(extra) + [f'--set={s}' for s in args.set]
  if backend:
    cmd.append(f'--set=replay_backend={backend}')
  if args.envs_per_actor:
    cmd.append(f'--envs_per_actor={args.envs_per_actor}')
  program = _Program(cmd, args.workdir)
  try:
    deadline = time.time() + args.start_timeout
    while _progress(program.workdir).get('actor_steps', 0) < 2000:
      if time.time() > deadline:
        program.fail(f'program did not start in {args.start_timeout:.0f} s')
      program.sleep(0.5)
    program.sleep(warmup_s)
    p0, t0 = _progress(program.workdir), time.time()
    program.sleep(seconds)
    p1, t1 = _progress(program.workdir), time.time()
    rss = _actor_rss_mb(program.workdir, num_actors)
  finally:
    program.stop()
  return dict(_window(program.workdir, p0, p1, t1 - t0, batch),
              actor_rss_mb=rss)


def _actor_rss_mb(workdir, num_actors):
  """Resident memory (MB) of each actor process, from the pids the nodes
  record in their control files."""
  import psutil  # pylint: disable=g-import-not-at-top
  out = []
  for i in range(num_actors):
    try:
      with open(os.path.join(workdir, 'control', 'nodes',
                             f'actor_{i}.json')) as f:
        out.append(psutil.Process(json.load(f)['pid']).memory_info().rss / 2**20)
    except (OSError, ValueError, KeyError, psutil.Error):
      out.append(float('nan'))
  return out


def _window(workdir, p0, p1, wall_s, batch):
  """The window's rates from two progress snapshots and the learner's rows."""
  dt = p1['time'] - p0['time'] if 'time' in p1 and 'time' in p0 else wall_s
  d_act = p1['actor_steps'] - p0['actor_steps']
  d_learn = p1.get('learner_steps', 0) - p0.get('learner_steps', 0)
  rows = _learner_rows(workdir, p0.get('time', 0), p1.get('time', 1e18))
  wait, own_spi = _column(rows, 'data_wait_fraction'), _column(
      rows, 'samples_per_insert')
  items = _column(rows, 'replay_items')
  nan = float('nan')
  return dict(
      actor_steps_per_s=d_act / dt, learner_updates_per_s=d_learn / dt,
      realised_spi=(d_learn * batch / d_act) if d_act else nan,
      # The learner's columns are cumulative since it started (wait) or since
      # min_replay_size (spi): the window's mean / last value, not a delta.
      data_wait_fraction=statistics.fmean(wait) if wait else nan,
      learner_spi=own_spi[-1] if own_spi else nan,
      replay_items=items[-1] if items else nan,
      learner_rows=len(rows), window_s=dt, workdir=workdir)


def ratio_settings(args):
  """(samples_per_insert, batch_size, extra run_local flags) of the ratio run."""
  if args.config == 'small':
    return args.spi or 32.0, args.batch or 32, SMALL
  from wpo_agent import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.make_config(
      args.config, **dict(config_lib.parse_override(s) for s in args.set))
  return (args.spi or config.samples_per_insert,
          args.batch or config.batch_size, ())


def _finite(obj):
  """NaN -> None throughout, so that the JSON is strict (jq, browsers)."""
  if isinstance(obj, float) and obj != obj:
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def _fmt(x, spec):
  return format(x, spec) if x == x else 'n/a'


def run_ratio(args, write):
  """The ratio measurement per backend (interleaved); returns its results."""
  spi, batch, extra = ratio_settings(args)
  backends = BACKENDS if args.backend == 'both' else (args.backend,)
  runs = {b: [] for b in backends}
  for _, backend in common.interleave(backends, args.repeats):
    try:
      r = measure(args.num_actors, spi, batch, args.seconds, args.warmup,
                  args, extra=extra, backend=backend)
    except RuntimeError as e:
      r = dict(error=str(e))
      print(f'[{backend}] run failed: {e}', flush=True)
    else:
      print(f'[{backend}] learner-bound (spi {spi:g}, batch {batch}, '
            f'{args.num_actors} actors): {r["actor_steps_per_s"]:.0f} actor '
            f'steps/s, {r["learner_updates_per_s"]:.1f} learner upd/s, '
            f'realised samples/insert {r["realised_spi"]:.1f} vs configured '
            f'{spi:g} ({100 * (r["realised_spi"] / spi - 1):+.1f}%), '
            f'learner\'s own {_fmt(r["learner_spi"], ".1f")}, data wait '
            f'{_fmt(100 * r["data_wait_fraction"], ".0f")}% (mean of '
            f'{r["learner_rows"]} train.csv rows)', flush=True)
    runs[backend].append(r)
    write(dict(backends=_summary(runs), configured_spi=spi, batch=batch))
  return _summary(runs), spi, batch


def _summary(runs):
  """Per backend: medians of each metric over its good runs, and the runs."""
  out = {}
  for backend, rs in runs.items():
    good = [r for r in rs if 'error' not in r]
    out[backend] = {m: statistics.median([r[m] for r in good]) if good
                    else float('nan') for m in METRICS}
    out[backend].update(runs=rs, failed=len(rs) - len(good))
  return out


def run_scaling(args, results):
  for n in (1, 2):
    r = measure(n, spi=args.scaling_spi, batch=32, seconds=args.seconds,
                warmup_s=args.warmup, args=args,
                extra=SMALL if args.config == 'small' else (),
                backend=None if args.backend == 'both' else args.backend)
    results[f'actors_{n}_steps_per_s'] = rate = r['actor_steps_per_s']
    results[f'actors_{n}_rss_mb'] = r['actor_rss_mb']
    print(f'{n} actor(s), learner throttled (spi {args.scaling_spi:g}): '
          f'{rate:.0f} actor '
          'steps/s; actor RSS (MB): ' + ', '.join(
              f'{mb:.0f}' for mb in r['actor_rss_mb']), flush=True)
  results['scaling_2_vs_1'] = (results['actors_2_steps_per_s'] /
                               results['actors_1_steps_per_s'])
  print(f'scaling 2 vs 1 actors: {results["scaling_2_vs_1"]:.2f}x')


def parse_args(argv=None):
  parser = common.add_flags(
      common.parser(__doc__), seconds=60.0, domain='cheetah', task='run',
      repeats=1, spi=None, batch=None, workdir=None,
      helps=dict(seconds='measured window of each run',
                 repeats='ratio runs per backend',
                 spi='samples_per_insert of the ratio run',
                 batch='batch_size of the ratio run',
                 workdir='make each run\'s workdir under this folder '
                 '(default: a new temporary folder)'))
  parser.add_argument('--warmup', type=float, default=15.0)
  parser.add_argument('--config', default='small',
                      help='run_local.py preset; other than small, the ratio '
                      'run uses its networks, samples_per_insert and batch')
  parser.add_argument('--backend', default='reverb',
                      choices=BACKENDS + ('both',),
                      help='replay_backend of the runs (both: ratio runs '
                      'interleaved; scaling then uses the config default)')
  parser.add_argument('--num_actors', type=int, default=2,
                      help='actors in the ratio run')
  parser.add_argument('--set', action='append', default=[],
                      metavar='FIELD=VALUE', help='passed on to run_local.py')
  parser.add_argument('--start-timeout', type=float, default=300.0,
                      help='seconds a program may take to reach 2000 steps')
  parser.add_argument('--envs_per_actor', type=int, default=None,
                      help='passed on to run_local.py (default: its own)')
  parser.add_argument('--skip-scaling', action='store_true')
  parser.add_argument('--skip-ratio', action='store_true')
  parser.add_argument('--scaling_spi', type=float, default=0.05,
                      help='samples_per_insert of the scaling runs (batch 32)')
  parser.add_argument('--json', nargs='?', const='-', default=None,
                      metavar='PATH', help='print the results as JSON, or '
                      'write them to PATH (after every run)')
  return parser.parse_args(argv)


def main():
  args = parse_args()
  # timeout(1) and schedulers send SIGTERM: exit through `finally` so that the
  # program under measurement is stopped too.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  results = dict(domain=args.domain, task=args.task, config=args.config,
                 num_actors=args.num_actors, seconds=args.seconds,
                 warmup=args.warmup, backend=args.backend,
                 envs_per_actor=args.envs_per_actor)

  def write(partial=None):
    if args.json and args.json != '-':
      with open(args.json + '.tmp', 'w') as f:
        json.dump(_finite({**results, **(partial or {})}), f, indent=1)
      os.replace(args.json + '.tmp', args.json)

  if not args.skip_scaling:
    run_scaling(args, results)
    write()
  if args.skip_ratio:
    print(json.dumps(_finite(results)) if args.json == '-' else '')
    return
  summary, spi, batch = run_ratio(args, write)
  results.update(backends=summary, configured_spi=spi, batch=batch)
  first = summary[next(iter(summary))]  # the keys earlier versions reported
  results.update(ratio_bound_steps_per_s=first['actor_steps_per_s'],
                 realised_spi=first['realised_spi'])
  write()
  if args.json == '-':
    print(json.dumps(_finite(results)))
  if all(s['failed'] == len(s['runs']) for s in summary.values()):
    sys.exit(1)


if __name__ == '__main__':
  main()
