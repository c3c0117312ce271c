"""networks.LayerNorm (matrix-product row statistics) vs flax.linen.LayerNorm.

Forward and gradient (w.r.t. input and parameters) on the critic's largest
activations, [rows, 512], timed in interleaved windows in one process.

  MUJOCO_GL=egl .venv/bin/python bench/bench_layernorm.py
"""

import argparse

import common  # noqa: F401  (sys.path for wpo_agent)
from common import median, spread

import flax.linen as nn
import jax
import jax.numpy as jnp

from wpo_agent import networks
from bench_learner import time_interleaved


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--rows', default='5120,1024')
  p.add_argument('--width', type=int, default=512)
  p.add_argument('--window', type=float, default=0.5, help='seconds')
  p.add_argument('--windows', type=int, default=6)
  args = p.parse_args()
  print(f'device {jax.devices()[0]}')
  variants = {}
  for rows in (int(r) for r in args.rows.split(',')):
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, args.width)) * 2 + 0.3
    for name, module in (('flax', nn.LayerNorm(epsilon=1e-5)),
                         ('ours', networks.LayerNorm(epsilon=1e-5))):
      params = module.init(jax.random.PRNGKey(1), x)

      def loss(p, x, module=module):
        return jnp.sum(jnp.tanh(module.apply(p, x)))

      fwd = jax.jit(module.apply)
      grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
      for kind, fn in (('fwd', fwd), ('grad', grad)):
        jax.block_until_ready(fn(params, x))
        variants[f'{name} {kind} [{rows},{args.width}]'] = (
            lambda fn=fn, params=params, x=x: jax.block_until_ready(
                fn(params, x)), 1)
  rates, _ = time_interleaved(variants, args.window, args.windows)
  ms = {name: 1e3 / median(r) for name, r in rates.items()}
  for name, r in rates.items():
    print(f'{name:24s} {ms[name]:7.2f} ms  (calls/s windows {spread(r)})')
  for name in ms:
    if name.startswith('flax'):
      ours = name.replace('flax', 'ours', 1)
      print(f'{name[5:]:20s} flax / ours = {ms[name] / ms[ours]:.2f}x')


if __name__ == '__main__':
  main()
