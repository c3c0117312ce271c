r"""Paper toy problems for WPO (docs/algorithm.md Sec. 9; paper Sec. 4 / Fig. 3).

`gaussian_update` is the Monte Carlo natural WPO update of a state-independent
Gaussian under the quadratic Q(a) = -k (a - a*)^2 / 2, next to its closed form.
`run_mixture` trains a two-component 1-D mixture of Gaussians on the bimodal
Q(a) = -a^4/100 + a^2 with WPO or with the score-function policy gradient.
The tests (tests/test_paper_toys.py, tests/test_toy_cli.py) use these functions,
so the CLI and the tests share one implementation:

    python -m wpo_agent.analysis.toy gaussian --mu 1 --sigma 1 --k 1 \
        --a-star 0 --json
    python -m wpo_agent.analysis.toy mixture --steps 3000 --plot /tmp/fig3.png
"""

import argparse
import functools
import json
import math
import os
import sys
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import distributions as dists
from wpo_agent import losses

METHODS = ('wpo', 'pg')
# Q(a) = -a^4/100 + a^2 has maxima where Q'(a) = -a^3/25 + 2a = 0, a = +-sqrt(50),
# and is convex (Q'' > 0) for |a| < sqrt(50/3).
MIXTURE_OPTIMUM = math.sqrt(50.0)
MIXTURE_CONVEX_EDGE = math.sqrt(50.0 / 3.0)


# ---------------------------------------------------------------- Gaussian toy.


class GaussianUpdate(NamedTuple):
  """Monte Carlo WPO update and its closed form; arrays of the inputs' shape."""
  delta_mu: np.ndarray
  delta_sigma: np.ndarray
  expected_delta_mu: np.ndarray
  expected_delta_sigma: np.ndarray
  stderr_mu: np.ndarray     # MC standard error of delta_mu (closed form)
  stderr_sigma: np.ndarray  # MC standard error of delta_sigma (closed form)


def expected_gaussian_update(mu, sigma, k, a_star, fisher=True):
  """Closed-form expected WPO update for Q(a) = -k (a - a*)^2 / 2 (docs/algorithm.md
  Sec. 9.1).

  Raw gradient: E[grad_theta grad_a log pi . grad_a Q] gives
  d mu = -k (mu - a*) / sigma^2 and, since E[(a - mu)(a - a*)] = sigma^2,
  d sigma = -2 k / sigma. The inverse Fisher diag(sigma^2, sigma^2 / 2) turns
  these into (-k (mu - a*), -k sigma).
  """
  mu, sigma, k, a_star = (np.asarray(x, np.float64) for x in (mu, sigma, k,
                                                             a_star))
  if fisher:
    return -k * (mu - a_star), -k * sigma
  return -k * (mu - a_star) / sigma**2, -2.0 * k / sigma


def _gaussian_stderr(mu, sigma, k, a_star, num_samples, fisher):
  """Per-sample std / sqrt(N) of the MC update, with eps = (a - mu) / sigma.

  Per sample (Fisher): d mu = -k (a - a*), d sigma = -k (sigma eps^2 + eps (mu-a*)),
  whose variances are k^2 sigma^2 and k^2 (2 sigma^2 + (mu - a*)^2).
  Without Fisher divide by sigma^2 and sigma^2 / 2 respectively.
  """
  mu, sigma, k, a_star = (np.asarray(x, np.float64) for x in (mu, sigma, k,
                                                             a_star))
  std_mu = np.abs(k) * sigma
  std_sigma = np.abs(k) * np.sqrt(2.0 * sigma**2 + (mu - a_star)**2)
  if not fisher:
    std_mu, std_sigma = std_mu / sigma**2, 2.0 * std_sigma / sigma**2
  return std_mu / np.sqrt(num_samples), std_sigma / np.sqrt(num_samples)


@functools.partial(jax.jit, static_argnames=('num_samples', 'fisher'))
def _gaussian_update_mc(key, mu, sigma, k, a_star, num_samples, fisher):
  """Negative WPO-loss gradient w.r.t. (mu, sigma) / N; all inputs [B, D]."""
  actions = dists.Gaussian(mu, sigma).sample(key, (num_samples,))  # [N, B, D]
  dq_da = -k * (actions - a_star)  # grad_a Q for Q = -k (a - a*)^2 / 2

  def loss(mu, sigma):
    policy = dists.Gaussian(mu, sigma)
    if fisher:
      policy = dists.natural_gradient(policy)
    return losses.wpo_policy_loss(policy, actions, dq_da, squash='identity')

  g_mu, g_sigma = jax.grad(loss, argnums=(0, 1))(mu, sigma)
  # The loss averages over the B states; the paper's update is per state and
  # divided by N, hence the factor B / N.
  scale = -mu.shape[0] / num_samples
  return scale * g_mu, scale * g_sigma


def gaussian_update(mu=1.0, sigma=1.0, k=1.0, a_star=0.0, samples=200_000,
                    fisher=True, seed=0) -> GaussianUpdate:
  """Monte Carlo natural WPO update of N(mu, sigma) for Q = -k (a - a*)^2 / 2.

  Inputs are scalars or arrays broadcastable to one shape of rank <= 2 (read as
  [B, D]: each state b and dimension d gets its own independent problem).
  """
  shape = np.broadcast_shapes(*(np.shape(x) for x in (mu, sigma, k, a_star)))
  if len(shape) > 2:
    raise ValueError(f'inputs must broadcast to rank <= 2 ([B, D]); got {shape}')
  if samples < 1:
    raise ValueError(f'samples must be >= 1, got {samples}')
  if np.any(np.asarray(sigma) <= 0):
    raise ValueError(f'sigma must be > 0, got {sigma}')
  shape_bd = (1,) * (2 - len(shape)) + shape
  as_bd = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), shape_bd)
  d_mu, d_sigma = _gaussian_update_mc(
      jax.random.PRNGKey(seed), as_bd(mu), as_bd(sigma), as_bd(k), as_bd(a_star),
      num_samples=int(samples), fisher=bool(fisher))
  exp_mu, exp_sigma = expected_gaussian_update(mu, sigma, k, a_star, fisher)
  se_mu, se_sigma = _gaussian_stderr(mu, sigma, k, a_star, samples, fisher)
  out = [np.asarray(d_mu, np.float64).reshape(shape),
         np.asarray(d_sigma, np.float64).reshape(shape)]
  out += [np.broadcast_to(x, shape) for x in (exp_mu, exp_sigma, se_mu,
                                               se_sigma)]
  return GaussianUpdate(*out)


# ----------------------------------------------------------------- Mixture toy.


def mixture_q(a):
  """Q(a) = -a^4/100 + a^2, maxima at +-sqrt(50) (paper Fig. 3)."""
  return -jnp.power(a, 4) / 100.0 + jnp.square(a)


class MixtureRun(NamedTuple):
  """Trajectories over steps 0..T of a K-component 1-D mixture."""
  loc: np.ndarray      # [T + 1, K]
  scale: np.ndarray    # [T + 1, K]
  weights: np.ndarray  # [T + 1, K]


def _mixture_loss(params, actions, method):
  """Mean over the batch of the WPO (natural) or score-function PG loss."""
  dist = dists.MixtureOfGaussians(*params)
  num_samples = actions.shape[0]
  if method == 'wpo':
    # The paper's mixture preconditioner: each component's gradients x sigma_k^2.
    dq_da = losses.action_gradient(lambda a: mixture_q(a)[..., 0], actions,
                                   samples_per_chunk=0)
    return losses.wpo_policy_loss(
        dists.natural_gradient(dist), actions, dq_da,
        squash='identity') / num_samples
  q = mixture_q(actions)[..., 0]  # [N, B]; REINFORCE without a baseline
  return -jnp.mean(q * dist.log_prob(actions))


@functools.partial(jax.jit, static_argnames=('steps', 'method', 'batch'))
def _run_mixture(key, params, steps, method, lr, batch, min_scale):
  def step(params, key):
    actions = jax.lax.stop_gradient(
        dists.MixtureOfGaussians(*params).sample(key, (batch,)))  # [N, 1, 1]
    grads = jax.grad(_mixture_loss)(params, actions, method)
    params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
    # sigma is a raw parameter under plain SGD: project it back onto
    # sigma >= min_scale so that a noisy step can never make it negative.
    params = params._replace(scale=jnp.maximum(params.scale, min_scale))
    return params, params

  _, traj = jax.lax.scan(step, params, jax.random.split(key, steps))
  traj = jax.tree_util.tree_map(
      lambda p0, ps: jnp.concatenate([p0[None], ps]), params, traj)
  return traj


def run_mixture(steps=3000, method='wpo', lr=0.003, batch=1024, seed=0,
                init_loc=(-1.0, 1.0), init_scale=1.0, init_weights=(0.5, 0.5),
                min_scale=1e-3) -> MixtureRun:
  """Plain SGD on a state-independent 1-D mixture for Q(a) = -a^4/100 + a^2.

  The parameters are the component logits, means and sigmas themselves (sigma is
  not log-parameterised, so the sigma^2 preconditioner is the paper's).
  method: 'wpo' (natural WPO loss, averaged over the batch) or 'pg' (score
  function, loss = -mean(Q(a) log pi(a)) at stopped samples).
  """
  if method not in METHODS:
    raise ValueError(f'method={method!r}; allowed: {list(METHODS)}')
  if steps < 1 or batch < 1 or lr <= 0:
    raise ValueError(f'need steps >= 1, batch >= 1, lr > 0; got {steps}, '
                     f'{batch}, {lr}')
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  params = dists.MixtureOfGaussians(
      logits=jnp.log(f32(init_weights))[None],  # [1, K]
      loc=f32(init_loc)[None, :, None],  # [1, K, 1]
      scale=jnp.broadcast_to(f32(init_scale), (len(init_loc),))[None, :, None])
  traj = _run_mixture(jax.random.PRNGKey(seed), params, steps=int(steps),
                      method=method, lr=f32(lr), batch=int(batch),
                      min_scale=f32(min_scale))
  return MixtureRun(loc=np.asarray(traj.loc[:, 0, :, 0]),
                    scale=np.asarray(traj.scale[:, 0, :, 0]),
                    weights=np.asarray(jax.nn.softmax(traj.logits[:, 0], -1)))


def plot_mixture(runs, path):
  """Component means +- sigma over steps, one panel per method (paper Fig. 3)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4),
                           sharey=True, squeeze=False)
  for ax, (method, run) in zip(axes[0], runs.items()):
    t = np.arange(run.loc.shape[0])
    for c in range(run.loc.shape[1]):
      line, = ax.plot(t, run.loc[:, c],
                      label=f'component {c} (final w={run.weights[-1, c]:.2f})')
      ax.fill_between(t, run.loc[:, c] - run.scale[:, c],
                      run.loc[:, c] + run.scale[:, c], alpha=0.25,
                      color=line.get_color())
    for y in (MIXTURE_OPTIMUM, -MIXTURE_OPTIMUM):
      ax.axhline(y, color='k', linestyle='--', linewidth=0.8)
    ax.set_title(f'{method.upper()}: component mean $\\pm\\sigma$')
    ax.set_xlabel('SGD step')
    ax.legend(loc='center right', fontsize=8)
  axes[0, 0].set_ylabel('action a  (dashed: maxima of Q at $\\pm\\sqrt{50}$)')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ------------------------------------------------------------------------ CLI.


def _positive(kind):
  def parse(text):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not a valid {kind.__name__}')
    if not value > 0 or not math.isfinite(value):
      raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
    return value
  return parse


def _finite(text):
  value = float(text)  # argparse turns a ValueError into a one-line error
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f'must be finite, got {text}')
  return value


class _Parser(argparse.ArgumentParser):
  """Reports a bad argument as ONE line on stderr (no usage block), exit 2."""

  def error(self, message):
    self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def _parser():
  parser = _Parser(
      prog='python -m wpo_agent.analysis.toy',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)

  g = sub.add_parser(
      'gaussian', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      help='Monte Carlo WPO update of N(mu, sigma) vs the closed form.',
      description='Monte Carlo WPO update (delta_mu, delta_sigma) of a 1-D '
      'Gaussian N(mu, sigma) for Q(a) = -k (a - a*)^2 / 2, next to the closed '
      'form (natural: -k (mu - a*), -k sigma).')
  g.add_argument('--mu', type=_finite, default=1.0, help='policy mean')
  g.add_argument('--sigma', type=_positive(float), default=1.0,
                 help='policy standard deviation (> 0)')
  g.add_argument('--k', type=_finite, default=1.0,
                 help='curvature of Q (negative k: Q = +|k| (a - a*)^2 / 2)')
  g.add_argument('--a-star', type=_finite, default=0.0,
                 help='centre a* of the quadratic Q')
  g.add_argument('--samples', type=_positive(int), default=200_000,
                 help='number N of Monte Carlo action samples (>= 1)')
  g.add_argument('--no-fisher', action='store_true',
                 help='skip the inverse-Fisher (natural gradient) scaling')
  g.add_argument('--seed', type=int, default=0, help='PRNG seed')
  g.add_argument('--json', action='store_true',
                 help='print one JSON object instead of a table')

  m = sub.add_parser(
      'mixture', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      help='Two-component mixture on Q(a) = -a^4/100 + a^2: WPO vs PG.',
      description='Trains a state-independent two-component 1-D mixture of '
      'Gaussians (weights 0.5, means +-1, sigma --init-sigma) on Q(a) = '
      '-a^4/100 + a^2 with natural WPO and with the score-function policy '
      'gradient (same SGD learning rate and steps), as in paper Fig. 3.')
  m.add_argument('--steps', type=_positive(int), default=3000,
                 help='SGD steps (>= 1)')
  m.add_argument('--lr', type=_positive(float), default=0.003,
                 help='SGD learning rate (> 0)')
  m.add_argument('--batch', type=_positive(int), default=1024,
                 help='action samples per step (>= 1)')
  m.add_argument('--init-sigma', type=_positive(float), default=1.0,
                 help='initial sigma of both components (> 0)')
  m.add_argument('--seed', type=int, default=0, help='PRNG seed')
  m.add_argument('--json', action='store_true',
                 help='print one JSON object instead of a table')
  m.add_argument('--plot', metavar='FILE.png', default=None,
                 help='save the trajectories of the means (+- sigma) here')
  return parser


def _gaussian_main(args):
  res = gaussian_update(args.mu, args.sigma, args.k, args.a_star, args.samples,
                        fisher=not args.no_fisher, seed=args.seed)
  out = {name: float(value) for name, value in res._asdict().items()}
  out.update(mu=args.mu, sigma=args.sigma, k=args.k, a_star=args.a_star,
             samples=args.samples, fisher=not args.no_fisher, seed=args.seed)
  if args.json:
    print(json.dumps(out))
    return 0
  print(f'Q(a) = -{args.k:g} (a - {args.a_star:g})^2 / 2, pi = N({args.mu:g}, '
        f'{args.sigma:g}^2), N = {args.samples}, fisher = {out["fisher"]}')
  print(f'{"":12s}{"monte carlo":>14s}{"closed form":>14s}{"std error":>12s}')
  for name in ('mu', 'sigma'):
    print(f'{"delta_" + name:12s}{out["delta_" + name]:14.5f}'
          f'{out["expected_delta_" + name]:14.5f}{out["stderr_" + name]:12.5f}')
  return 0


def _mixture_main(args):
  if args.plot and not os.path.isdir(os.path.dirname(args.plot) or '.'):
    # Fail before training rather than after it.
    raise ValueError(f'--plot: directory of {args.plot!r} does not exist')
  runs = {method: run_mixture(args.steps, method, args.lr, args.batch,
                              args.seed, init_scale=args.init_sigma)
          for method in METHODS}
  final = {method: {'loc': run.loc[-1].tolist(), 'sigma': run.scale[-1].tolist(),
                    'weight': run.weights[-1].tolist()}
           for method, run in runs.items()}
  if args.plot:
    plot_mixture(runs, args.plot)
  if args.json:
    print(json.dumps(dict(final, steps=args.steps, lr=args.lr,
                          batch=args.batch, seed=args.seed,
                          optimum=MIXTURE_OPTIMUM, plot=args.plot)))
    return 0
  print(f'Q(a) = -a^4/100 + a^2 (maxima +-{MIXTURE_OPTIMUM:.3f}); '
        f'{args.steps} SGD steps, lr {args.lr:g}, batch {args.batch}')
  for method, f in final.items():
    for c in range(len(f['loc'])):
      print(f'{method.upper():4s} component {c}: mean {f["loc"][c]:9.4f}  '
            f'sigma {f["sigma"][c]:8.4f}  weight {f["weight"][c]:.4f}')
  if args.plot:
    print(f'plot written to {args.plot}')
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """CLI entry point; returns the exit code (2 on invalid arguments)."""
  parser = _parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # --help (0) or a bad argument (2): return, not exit
    return e.code if isinstance(e.code, int) else 2
  try:
    if args.command == 'gaussian':
      return _gaussian_main(args)
    return _mixture_main(args)
  except (ValueError, OSError) as e:  # e.g. an unwritable --plot path
    print(f'{parser.prog} {args.command}: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
