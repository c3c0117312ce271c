"""Learner step with this tree's networks.py against an older commit's, one process.

Loads `wpo_agent/networks.py` as it was at `--commit` (via `git show`) next to the
current one, builds the same learner step (this tree's learning.py) on each, and
times them in interleaved windows, so the ratio survives a noisy machine. The old
networks run with `action_samples_per_chunk=N` (all samples at once, as before that
option existed) unless --old-chunk says otherwise.

  MUJOCO_GL=egl .venv/bin/python bench/bench_vs_commit.py --commit a5f9836
"""

import argparse
import importlib.util
import os
import subprocess
import tempfile

import common  # noqa: F401  (sys.path for wpo_agent)
from common import median, spread

import jax
import numpy as np

from wpo_agent import config as config_lib
from wpo_agent import learning
from wpo_agent import networks as new_networks
from bench_learner import random_batch, time_interleaved


def load_networks_at(commit):
  source = subprocess.run(
      ['git', 'show', f'{commit}:wpo_agent/networks.py'], check=True,
      capture_output=True, text=True, cwd=common._ROOT).stdout  # pylint: disable=protected-access
  path = os.path.join(tempfile.mkdtemp(), 'networks_old.py')
  with open(path, 'w') as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location('networks_old', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--commit', required=True)
  p.add_argument('--old-chunk', type=int, default=20)
  p.add_argument('--ks', default='1,8')
  p.add_argument('--window', type=float, default=2.0, help='seconds')
  p.add_argument('--windows', type=int, default=8)
  args = p.parse_args()
  old_networks = load_networks_at(args.commit)
  print(f'device {jax.devices()[0]}; humanoid sizes: obs 67, act 21, batch 256, '
        'N 20, policy 256x3, critic 512,512,256')
  variants = {}
  ks = [int(k) for k in args.ks.split(',')]
  for k in ks:
    for name, module, chunk in (('old', old_networks, args.old_chunk),
                                ('new', new_networks, 0)):
      cfg = config_lib.make_config(
          'acme', critic_layer_sizes=(512, 512, 256),
          sgd_steps_per_learner_step=k, action_samples_per_chunk=chunk)
      nets = module.make_networks(
          67, -np.ones(21), np.ones(21),
          policy_layer_sizes=cfg.policy_layer_sizes,
          critic_layer_sizes=cfg.critic_layer_sizes)
      state = [learning.init_training_state(nets, cfg, jax.random.PRNGKey(0))]
      batch = jax.device_put(random_batch(np.random.default_rng(0), k, 256,
                                          67, 21))
      step = jax.jit(learning.make_learner_step(nets, cfg), donate_argnums=0)

      def run(step=step, batch=batch, state=state):
        state[0], _ = step(state[0], batch)
        jax.block_until_ready(state[0])

      run()
      variants[f'{name} K={k}'] = (run, k)
  rates, cpu_rates = time_interleaved(variants, args.window, args.windows)
  for name, r in rates.items():
    print(f'{name:8s} {median(r):6.2f} updates/s (windows {spread(r)}), '
          f'{median(cpu_rates[name]):.2f} per CPU-second')
  for k in ks:
    new, old = median(rates[f'new K={k}']), median(rates[f'old K={k}'])
    print(f'K={k}: new / old = {new / old:.3f}')


if __name__ == '__main__':
  main()
