"""Learner throughput: SGD updates/s of the jitted WPO learner step.

Builds the real networks/config/state (wpo_agent.networks, config 'acme' preset
with the sizes given here, learning.init_training_state) and times
jax.jit(learning.make_learner_step(nets, cfg), donate_argnums=0) on one fixed
random Batch with a leading [K] axis, for each K in --ks. The Ks and a float32
GEMM ([5120,512] x [512,512], the ceiling) are timed in interleaved windows, so
their ratios are comparable on a noisy machine. With --profile-parts it also
times, interleaved, the pieces of one SGD step separately, each the jitted
named function that learning.make_sgd_step itself calls
(learning.make_loss_fns, learning.make_optimizers):
  critic_grad value_and_grad(critic_loss) w.r.t. the critic params: target
              policy on B rows + target critic forward on N*B rows (the
              bootstrap target) + critic TD loss + grad on B rows
  dq_da       action_gradient: online critic forward + input-vjp on N*B rows
  policy_grad value_and_grad(policy_loss) w.r.t. policy and dual params: WPO +
              KL policy loss + grad on B rows (given actions and dq_da)
  adam        optimizer updates of critic and policy

Runs unchanged on GPU (prints jax.devices()).

  MUJOCO_GL=egl .venv/bin/python bench/bench_learner.py --profile-parts
"""

import time

import common
from common import (current_rss_mb, emit_json, load_average, median,
                    peak_rss_mb, print_table, spread)

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wpo_agent import config as config_lib
from wpo_agent import learning


def parse_args(argv=None):
  p = common.parser(__doc__)
  common.add_flags(
      p, obs_dim=common.HUMANOID_OBS, act_dim=common.HUMANOID_ACT, batch=256,
      ks='1,8', seconds=20.0, windows=5, json=False,
      helps=dict(seconds='total timing budget of the main (K) measurement'))
  p.add_argument('--samples', type=int, default=20, help='N action samples')
  p.add_argument('--policy', type=common.ints, default=(256, 256, 256))
  p.add_argument('--critic', type=common.ints, default=common.PAPER_CRITIC)
  p.add_argument('--chunks', type=common.ints, default=(0,),
                 help='action_samples_per_chunk values to compare (0 = auto; '
                 'N = all samples at once)')
  p.add_argument('--profile-parts', action='store_true',
                 help='also time the pieces of one SGD step separately')
  p.add_argument('--parts-seconds', type=float, default=15.0,
                 help='timing budget of --profile-parts')
  return p.parse_args(argv)


# ----------------------------------------------------------------------------
# Analytic FLOPs (matmuls only; 1 MAC = 2 FLOPs; elementwise work ignored).


def mlp_flops(in_dim, sizes, out_dim):
  dims = (in_dim,) + tuple(sizes) + (out_dim,)
  return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))


def step_flops(obs, act, batch, n, policy, critic):
  """Per SGD step. Backward ~ 2x forward (activation + weight grads); an
  input-only backward (dq_da) ~ 1x forward."""
  pf = mlp_flops(obs, policy, 2 * act)   # Gaussian: loc + scale heads
  cf = mlp_flops(obs + act, critic, 1)
  nb = n * batch
  parts = {
      # Bootstrap target (target policy + target critic fwd, no bwd: only the
      # online critic params are differentiated) + critic fwd + bwd on B rows.
      'critic_grad': pf * batch + cf * nb + 3 * cf * batch,
      'dq_da': 2 * cf * nb,                # critic fwd + input-bwd on N*B rows
      # online fwd (sampling) + loss: online fwd+bwd, target fwd.
      'policy_grad': pf * batch + 3 * pf * batch + pf * batch,
  }
  return parts, sum(parts.values())


def memory_stats(compiled):
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  out = {}
  for f in ('argument_size_in_bytes', 'output_size_in_bytes',
            'temp_size_in_bytes', 'alias_size_in_bytes',
            'generated_code_size_in_bytes'):
    if hasattr(m, f):
      out[f.replace('_size_in_bytes', '_mb')] = getattr(m, f) / 2**20
  return out


def xla_flops(compiled):
  try:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
      ca = ca[0]
    return float(ca.get('flops', float('nan')))
  except Exception:  # pylint: disable=broad-except
    return float('nan')


class LearnerVariant:
  """One K: compiled learner step + its (donated) state."""

  def __init__(self, nets, cfg, k, args, rng):
    self.k = k
    self.state = learning.init_training_state(nets, cfg, jax.random.PRNGKey(0))
    self.batch = jax.device_put(common.random_batch(
        rng, (k, args.batch), args.obs_dim, args.act_dim))
    jitted = jax.jit(learning.make_learner_step(nets, cfg), donate_argnums=0)
    t0 = time.perf_counter()
    self.compiled = jitted.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.memory = memory_stats(self.compiled)
    self.xla_flops_per_call = xla_flops(self.compiled)
    # Warm-up (first execution allocates).
    t0 = time.perf_counter()
    self()
    self.first_call_s = time.perf_counter() - t0
    self.peak_rss_mb = peak_rss_mb()

  def __call__(self):
    self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return metrics


def make_gemm(rows=5120, inner=512, cols=512):
  key = jax.random.PRNGKey(1)
  a = jax.random.normal(key, (rows, inner), jnp.float32)
  b = jax.random.normal(jax.random.fold_in(key, 1), (inner, cols), jnp.float32)
  f = jax.jit(jnp.matmul)
  jax.block_until_ready(f(a, b))
  flops = 2.0 * rows * inner * cols

  def run():
    jax.block_until_ready(f(a, b))
  return run, flops / 1e9  # units = GFLOP per call


# ----------------------------------------------------------------------------
# Parts of one SGD step: the named functions learning.make_sgd_step composes
# (learning.make_loss_fns, learning.make_optimizers), each jitted alone; K = 1.


def make_parts(nets, cfg, args, rng):
  # This bench's configs leave policy_loss_on_next_obs off (the default), so
  # the policy parts run on the B observations of the batch, as in the step.
  assert not cfg.policy_loss_on_next_obs
  n, b = args.samples, args.batch
  st = learning.init_training_state(nets, cfg, jax.random.PRNGKey(0))
  bt = jax.device_put(common.random_batch(rng, (1, b), args.obs_dim,
                                          args.act_dim))
  bt = jax.tree.map(lambda x: x[0], bt)
  key = jax.random.PRNGKey(2)
  actions = jax.device_put(
      rng.uniform(-1, 1, (n, b, args.act_dim)).astype(np.float32))
  dq = jax.device_put(rng.standard_normal((n, b, args.act_dim)).astype(
      np.float32))
  opt = learning.make_optimizers(cfg)
  loss_fns = learning.make_loss_fns(nets, cfg)

  critic_grad = jax.jit(jax.value_and_grad(loss_fns.critic_loss,
                                           has_aux=True))
  dq_da = jax.jit(loss_fns.action_gradient)
  policy_grad = jax.jit(jax.value_and_grad(loss_fns.policy_loss,
                                           argnums=(0, 1), has_aux=True))

  @jax.jit
  def adam(cp, cos, cg, pp, pos, pg):
    cu, cos = opt.critic.update(cg, cos, cp)
    pu, pos = opt.policy.update(pg, pos, pp)
    return optax.apply_updates(cp, cu), cos, optax.apply_updates(pp, pu), pos

  _, cgrads = critic_grad(st.critic_params, st.target_policy_params,
                          st.target_critic_params, bt, key)
  _, (pgrads, _) = policy_grad(st.policy_params, st.dual_params,
                               st.target_policy_params, bt.observation,
                               actions, dq)
  calls = {
      'critic_grad': lambda: critic_grad(st.critic_params,
                                         st.target_policy_params,
                                         st.target_critic_params, bt, key),
      'dq_da': lambda: dq_da(st.critic_params, bt.observation, actions),
      'policy_grad': lambda: policy_grad(st.policy_params, st.dual_params,
                                         st.target_policy_params,
                                         bt.observation, actions, dq),
      'adam': lambda: adam(st.critic_params, st.critic_opt_state, cgrads,
                           st.policy_params, st.policy_opt_state, pgrads),
  }
  variants = {}
  for name, fn in calls.items():
    jax.block_until_ready(fn())  # compile
    variants[name] = (lambda fn=fn: jax.block_until_ready(fn()), 1)
  return variants


# ----------------------------------------------------------------------------


def _config(args, **overrides):
  """The 'acme' preset at this run's sizes."""
  return config_lib.make_config(
      'acme', policy_layer_sizes=args.policy, critic_layer_sizes=args.critic,
      batch_size=args.batch, num_action_samples=args.samples, **overrides)


def measure_ks(args, rng):
  """Compiles a learner per K (and chunk) and times them interleaved with
  the GEMM ceiling; returns (networks, learners, rates, cpu_rates)."""
  _, nets = common.learner_setup(
      args.obs_dim, args.act_dim, policy_layer_sizes=args.policy,
      critic_layer_sizes=args.critic)
  learners = {}
  for k in args.ks:
    for c in args.chunks:
      cfg = _config(args, sgd_steps_per_learner_step=k,
                    action_samples_per_chunk=c)
      name = f'K={k}' + (f' c={learning.resolve_samples_per_chunk(cfg)}'
                         if len(args.chunks) > 1 else '')
      learners[name] = LearnerVariant(nets, cfg, k, args, rng)
  gemm, gemm_gflop = make_gemm()
  variants = {name: (v, v.k) for name, v in learners.items()}
  variants['gemm'] = (gemm, gemm_gflop)
  window = args.seconds / (len(variants) * args.windows)
  rates, cpu_rates = common.time_windows(variants, window, args.windows)
  return nets, learners, rates, cpu_rates


def report_ks(args, flops, learners, rates, cpu_rates):
  """Prints the per-K table; returns the JSON record."""
  gemm_gflops = median(rates['gemm'])
  gemm_cpu = median(cpu_rates['gemm'])
  print(f'\nGEMM ceiling f32 [5120,512]x[512,512]: {gemm_gflops:.1f} GFLOP/s '
        f'(windows {spread(rates["gemm"])});  '
        f'ceiling updates/s at {flops / 1e9:.2f} GFLOP/step: '
        f'{gemm_gflops / (flops / 1e9):.1f};  per CPU-second: '
        f'{gemm_cpu:.1f} GFLOP/cpu-s')
  rows, record = [], {
      'device': str(jax.devices()[0]), 'backend': jax.default_backend(),
      'args': vars(args), 'step_gflop': flops / 1e9,
      'gemm_gflops': gemm_gflops, 'gemm_gflops_per_cpu_s': gemm_cpu,
      'ks': {}}
  for name, v in learners.items():
    ups, cpu_ups = median(rates[name]), median(cpu_rates[name])
    achieved = ups * flops / 1e9
    mem = v.memory
    rows.append([name, v.compile_s, ups, spread(rates[name]), cpu_ups,
                 achieved, achieved / gemm_gflops,
                 cpu_ups * flops / 1e9 / gemm_cpu, v.peak_rss_mb,
                 mem.get('temp_mb', float('nan')),
                 mem.get('argument_mb', float('nan'))])
    record['ks'][name] = dict(compile_s=v.compile_s,
                              first_call_s=v.first_call_s,
                              updates_per_s=ups, windows=rates[name],
                              updates_per_cpu_s=cpu_ups,
                              achieved_gflops=achieved,
                              frac_of_gemm=achieved / gemm_gflops,
                              frac_of_gemm_cpu=cpu_ups * flops / 1e9 / gemm_cpu,
                              peak_rss_mb_after_setup=v.peak_rss_mb,
                              xla_cost_flops_per_call=v.xla_flops_per_call,
                              memory_analysis=mem)
  print()
  print_table(['variant', 'compile_s', 'updates/s', 'windows', 'upd/cpu-s',
               'GFLOP/s', 'frac_gemm', 'frac_gemm_cpu', 'peakRSS_MB',
               'xla_temp_MB', 'xla_args_MB'], rows)
  print('(upd/cpu-s: updates per second of process CPU time, all threads; '
        'steadier than wall time on a shared CPU box, where wall ~ cores x '
        'this when idle. frac_gemm*: achieved GFLOP/s over the GEMM ceiling, '
        'wall and CPU-time based)')
  print(f'(peak RSS is the process peak after compiling and warming that K; '
        f'current RSS {current_rss_mb():.0f} MB)')
  for name, v in learners.items():
    xf = v.xla_flops_per_call
    if xf == xf:
      print(f'XLA cost_analysis {name}: {xf / 1e9:.2f} GFLOP per call '
            f'(scan bodies may be counted once)')
  return record


def profile_parts(args, nets, rng, learners, flop_parts, flops):
  """Times the parts of one SGD step against the first learner's full step,
  interleaved; prints their table and returns its JSON record."""
  parts = make_parts(nets, _config(args,
                                   action_samples_per_chunk=args.chunks[0]),
                     args, rng)
  first = next(iter(learners.values()))
  parts['full'] = (first, first.k)
  window = args.parts_seconds / (len(parts) * args.windows)
  prates, pcpu = common.time_windows(parts, window, args.windows)
  full_ms = 1e3 / median(prates['full'])  # rates are SGD steps/s
  full_cpu_ms = 1e3 / median(pcpu['full'])
  rows, total, total_cpu, record = [], 0.0, 0.0, {}
  for name in parts:
    if name.startswith('full'):
      continue
    ms, cpu_ms = 1e3 / median(prates[name]), 1e3 / median(pcpu[name])
    total += ms
    total_cpu += cpu_ms
    fl = flop_parts.get(name, 0.0)
    gf = fl / 1e9 / (ms / 1e3) if fl else float('nan')
    rows.append([name, ms, 100 * ms / full_ms, cpu_ms,
                 100 * cpu_ms / full_cpu_ms, fl / 1e9, gf])
    record[name] = dict(ms=ms, cpu_ms=cpu_ms, gflop=fl / 1e9, gflops=gf)
  rows.append(['sum of parts', total, 100 * total / full_ms, total_cpu,
               100 * total_cpu / full_cpu_ms, flops / 1e9,
               flops / 1e9 / (total / 1e3)])
  rows.append([f'full step ({next(iter(learners))})', full_ms, 100.0,
               full_cpu_ms, 100.0, flops / 1e9, flops / 1e9 / (full_ms / 1e3)])
  record['full_ms'] = full_ms
  record['full_cpu_ms'] = full_cpu_ms
  print(f'\nParts of one SGD step (medians of {args.windows} interleaved '
        'windows; % of the full step):')
  print_table(['part', 'ms', '%full', 'cpu_ms', '%full_cpu', 'GFLOP',
               'GFLOP/s'], rows)
  return record


def main(argv=None):
  args = parse_args(argv)
  print(f'jax {jax.__version__}  devices: {jax.devices()}  '
        f'backend: {jax.default_backend()}  load avg: {load_average()}')
  print(f'obs {args.obs_dim}  act {args.act_dim}  batch {args.batch}  '
        f'N {args.samples}  policy {args.policy}  critic {args.critic}')
  flop_parts, flops = step_flops(args.obs_dim, args.act_dim, args.batch,
                                 args.samples, args.policy, args.critic)
  print(f'analytic matmul FLOPs per SGD step: {flops / 1e9:.2f} GFLOP  (' +
        ', '.join(f'{k} {v / 1e9:.2f}' for k, v in flop_parts.items()) + ')')
  rng = np.random.default_rng(0)
  nets, learners, rates, cpu_rates = measure_ks(args, rng)
  record = report_ks(args, flops, learners, rates, cpu_rates)
  if args.profile_parts:
    record['parts'] = profile_parts(args, nets, rng, learners, flop_parts,
                                    flops)
  record['peak_rss_mb'] = peak_rss_mb()
  if args.json:
    emit_json(record)


if __name__ == '__main__':
  main()
