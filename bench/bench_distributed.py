"""Distributed program throughput: actor scaling and the realised data ratio.

Launches `launch/run_local.py` (local multi-processing) and reads the counter
snapshot the step limiter writes to `<workdir>/control/progress.json`.

  scaling: 1 vs 2 actors with the learner throttled by a tiny samples-per-insert (0.05)
           (it needs one SGD step per `batch_size / spi` inserts, so it mostly
           sleeps on the rate limiter); reports aggregate actor steps/s.
  ratio:   the learner is the bottleneck (spi = 32, batch 32, small networks);
           reports realised samples-per-insert = d(learner_steps) * B /
           d(actor_steps) over the steady-state window vs the configured value.

Usage: .venv/bin/python bench/bench_distributed.py [--seconds 60] [--json]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--set=policy_layer_sizes=64,64', '--set=critic_layer_sizes=64,64',
         '--set=num_action_samples=10', '--set=min_replay_size=1000']


def _progress(workdir):
  try:
    with open(os.path.join(workdir, 'control', 'progress.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def measure(num_actors, spi, batch, seconds, warmup_s, domain, task):
  """Returns (actor steps/s, realised samples-per-insert) over the window."""
  workdir = tempfile.mkdtemp(prefix='wpo-bench-')
  cmd = [sys.executable, os.path.join(REPO, 'launch', 'run_local.py'),
         f'--domain={domain}', f'--task={task}', '--config=small',
         f'--num_actors={num_actors}', '--max_actor_steps=100000000',
         '--eval_every=100000000', f'--workdir={workdir}',
         '--progress_every=1000', f'--set=samples_per_insert={spi}',
         f'--set=batch_size={batch}'] + SMALL
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL,
                          env=dict(os.environ, MUJOCO_GL='egl'))
  try:
    deadline = time.time() + 300
    while _progress(workdir).get('actor_steps', 0) < 2000:
      if time.time() > deadline or proc.poll() is not None:
        raise RuntimeError(f'program did not start (workdir {workdir})')
      time.sleep(0.5)
    time.sleep(warmup_s)
    p0, t0 = _progress(workdir), time.time()
    time.sleep(seconds)
    p1, t1 = _progress(workdir), time.time()
  finally:
    proc.send_signal(signal.SIGINT)
    try:
      proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      proc.kill()
  dt = p1['time'] - p0['time'] if 'time' in p1 and 'time' in p0 else t1 - t0
  d_act = p1['actor_steps'] - p0['actor_steps']
  d_learn = p1.get('learner_steps', 0) - p0.get('learner_steps', 0)
  return d_act / dt, (d_learn * batch / d_act) if d_act else float('nan')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--seconds', type=float, default=60.0)
  parser.add_argument('--warmup', type=float, default=15.0)
  parser.add_argument('--domain', default='cheetah')
  parser.add_argument('--task', default='run')
  parser.add_argument('--skip-scaling', action='store_true')
  parser.add_argument('--json', action='store_true')
  args = parser.parse_args()

  results = {}
  if args.skip_scaling:
    n_list = ()
  else:
    n_list = (1, 2)
  for n in n_list:
    rate, _ = measure(n, spi=0.05, batch=32, seconds=args.seconds,
                      warmup_s=args.warmup, domain=args.domain, task=args.task)
    results[f'actors_{n}_steps_per_s'] = rate
    print(f'{n} actor(s), learner throttled (spi 0.05): {rate:.0f} actor '
          'steps/s', flush=True)
  if n_list:
    results['scaling_2_vs_1'] = (results['actors_2_steps_per_s'] /
                                 results['actors_1_steps_per_s'])
    print(f'scaling 2 vs 1 actors: {results["scaling_2_vs_1"]:.2f}x')

  rate, spi = measure(2, spi=32.0, batch=32, seconds=args.seconds,
                      warmup_s=args.warmup, domain=args.domain, task=args.task)
  results.update(ratio_bound_steps_per_s=rate, realised_spi=spi,
                 configured_spi=32.0)
  print(f'learner-bound (spi 32, batch 32, 2 actors): {rate:.0f} actor steps/s,'
        f' realised samples/insert {spi:.1f} vs configured 32 '
        f'({100 * (spi / 32 - 1):+.1f}%)')
  if args.json:
    print(json.dumps(results))


if __name__ == '__main__':
  main()
