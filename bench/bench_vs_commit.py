"""Learner and actor-loop speed of this tree against an older commit's.

Extracts `--commit` into a temporary folder (git archive) and runs the same
probe (`probe_run_layer.py`) against each tree's `wpo_agent` in alternating
subprocesses, round after round (odd rounds in reverse order), so the ratios
survive a noisy machine:

  learner  WPOLearner.step() on one fixed in-memory [K, B] batch (humanoid
           sizes: obs 67, act 21, batch 256, N 20, policy 256x3, critic
           512,512,256), SGD updates/s for each K in --ks;
  actor    the actor loop on cheetah-run: policy 256x3 (fixed parameters),
           n-step writer into an in-process reverb table, env steps/s.

  MUJOCO_GL=egl .venv/bin/python bench/bench_vs_commit.py --commit cf0616d
"""

import json
import os
import subprocess
import sys
import tarfile
import tempfile

import common
from common import median, spread

_PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'probe_run_layer.py')


def extract(commit: str) -> str:
  """The tree of `commit` in a temporary folder."""
  root = tempfile.mkdtemp(prefix=f'wpo-{commit}-')
  archive = os.path.join(root, 'tree.tar')
  subprocess.run(['git', 'archive', '-o', archive, commit], check=True,
                 cwd=common.ROOT)
  with tarfile.open(archive) as tar:
    tar.extractall(os.path.join(root, 'tree'))
  return os.path.join(root, 'tree')


def probe(tree: str, what: str, args) -> dict:
  env = dict(os.environ, PYTHONPATH=tree, MUJOCO_GL='egl')
  cmd = [sys.executable, _PROBE, what, '--seconds', str(args.seconds),
         '--ks', ','.join(map(str, args.ks)), '--steps', str(args.steps)]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       check=True, cwd=tree).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  p = common.add_flags(
      common.parser(__doc__), seconds=8.0, steps=4000, ks='1,8',
      helps=dict(seconds='timed window per learner K',
                 steps='actor-loop steps per measurement'))
  p.add_argument('--commit', required=True)
  p.add_argument('--rounds', type=int, default=3)
  args = p.parse_args()
  trees = {'old': extract(args.commit), 'new': common.ROOT}
  rates = {}
  # Odd rounds run in reverse order, so neither tree always goes first.
  runs = [(what, name) for what in ('learner', 'actor')
          for name in ('old', 'new')]
  for r, (what, name) in common.interleave(runs, args.rounds, alternate=True):
    for key, value in probe(trees[name], what, args).items():
      rates.setdefault((key, name), []).append(value)
    print(f'round {r} {what} {name} done', flush=True)
  print(f'\n{args.commit} (old) vs this tree (new), medians of {args.rounds} '
        'rounds:')
  for key in sorted({k for k, _ in rates}):
    old, new = rates[(key, 'old')], rates[(key, 'new')]
    print(f'{key:12s} old {median(old):9.1f} ({spread(old)})  new '
          f'{median(new):9.1f} ({spread(new)})  new/old '
          f'{median(new) / median(old):.3f}')


if __name__ == '__main__':
  main()
