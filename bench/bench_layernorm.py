"""networks.LayerNorm (matrix-product row statistics) vs flax.linen.LayerNorm.

Forward and gradient (w.r.t. input and parameters) on the critic's largest
activations, [rows, 512], timed in interleaved windows in one process.

  MUJOCO_GL=egl .venv/bin/python bench/bench_layernorm.py
"""

import common
from common import spread

import flax.linen as nn
import jax
import jax.numpy as jnp

from wpo_agent import networks


def main():
  p = common.add_flags(common.parser(__doc__), windows=6)
  p.add_argument('--rows', default='5120,1024')
  p.add_argument('--width', type=int, default=512)
  p.add_argument('--window', type=float, default=0.5, help='seconds')
  args = p.parse_args()
  print(f'device {jax.devices()[0]}')
  variants = {}
  for rows in common.ints(args.rows):
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
  rates, _ = common.time_windows(variants, args.window, args.windows)
  ms = {name: 1e3 / m for name, m in common.medians(rates).items()}
  for name, r in rates.items():
    print(f'{name:24s} {ms[name]:7.2f} ms  (calls/s windows {spread(r)})')
  for name in ms:
    if name.startswith('flax'):
      ours = name.replace('flax', 'ours', 1)
      print(f'{name[5:]:20s} flax / ours = {ms[name] / ms[ours]:.2f}x')


if __name__ == '__main__':
  main()
