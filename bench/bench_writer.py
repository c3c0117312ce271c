"""Actor-loop throughput with the fast n-step writer vs dm-acme's adder loop.

Per domain, env steps/s of (suite episodes are 1000 steps; --steps is rounded
up to whole episodes, resets included in the timing):
  raw           dm_control suite.load(...) stepped with uniform random actions
  wrapped       wpo_agent.environments.make_environment (the fused
                ControlSuiteWrapper), random actions
  wrapped_acme  dm-acme's wrapper stack (tests/reference/acme_wrappers.py,
                make_acme_environment), random actions
  acme_loop     dm-acme 0.4.0 EnvironmentLoop + random actor + acme
                NStepTransitionAdder(n=5) on the acme-wrapped environment
                (the dm-acme baseline)
  ours_acme     the one-environment actor loop: WPOActor (policy
                (256,256,256), VariableClient on a StaticVariableSource) +
                acme's adder (tests/reference/acme_adder.py, make_adder; the
                actor feeds it through nstep_adder.AdderActor),
                fused environment
  ours_fast     the same + our fast n-step writer (nstep_writer.TransitionWriter
                through acme's Adder API, tests/nstep_adder.py)
  ours_fast_acmeenv  ours_fast on the acme-wrapped environment (shows the
                fused wrapper's share)
  ours_noadd    ours_fast's loop without any writer (policy + env only)
Adder variants write into a fresh in-process reverb table
(replay.make_replay_table, rate_limiter='min_size'). Variants run round-robin,
--repeats times, in one process; medians are printed with the ratios
ours_fast/acme_loop and ours_fast/raw (and the acme-wrapped counterparts).
--breakdown times the pieces of the ours_fast loop in one extra pass per domain.
Several environments per actor (what the runners now use): bench_actors.py.

  MUJOCO_GL=egl .venv/bin/python bench/bench_writer.py \
      --domains cheetah:run,humanoid:run --steps 3000 --repeats 3
"""

import gc
import math
import os
import time

import common
from common import Stopwatch, emit_json, load_average, print_table, spread

# The acme reference implementations (test oracles) and acme's Adder API over
# our writer live with the tests.
common.tests_on_path()

os.environ.setdefault('MUJOCO_GL', 'egl')

import acme  # noqa: E402
from acme import environment_loop  # noqa: E402
from acme.adders import reverb as acme_reverb  # noqa: E402
from acme.utils import counting  # noqa: E402
from acme.utils import loggers  # noqa: E402
from dm_control import suite  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import reverb  # noqa: E402

from wpo_agent import acting  # noqa: E402
from wpo_agent import environments  # noqa: E402
from wpo_agent import replay  # noqa: E402
import nstep_adder  # noqa: E402
from reference import acme_adder  # noqa: E402
from reference import acme_wrappers  # noqa: E402

VARIANTS = ('raw', 'wrapped', 'wrapped_acme', 'acme_loop', 'ours_acme',
            'ours_fast', 'ours_fast_acmeenv', 'ours_noadd')
WRITER_VARIANTS = ('acme_loop', 'ours_acme', 'ours_fast', 'ours_fast_acmeenv')
# Variants stepping dm-acme's wrapper stack; the others use the fused wrapper.
ACME_WRAPPED = ('wrapped_acme', 'acme_loop', 'ours_fast_acmeenv')
N_STEP, DISCOUNT = 5, 0.99


def parse_args(argv=None):
  p = common.add_flags(
      common.parser(__doc__), domains='cheetah:run,humanoid:run', steps=3000,
      repeats=3, json=False,
      helps=dict(steps='env steps per measurement (rounded up to episodes)'))
  p.add_argument('--variants', default=','.join(VARIANTS))
  p.add_argument('--breakdown', action='store_true',
                 help='also time the pieces of the ours_fast loop')
  return p.parse_args(argv)


class RandomActor(acme.Actor):
  """Uniform random actions in the spec's bounds."""

  def __init__(self, action_spec, seed=0):
    self._spec = action_spec
    self._rng = np.random.default_rng(seed)

  def select_action(self, observation):
    del observation
    return self._rng.uniform(self._spec.minimum, self._spec.maximum,
                             self._spec.shape).astype(self._spec.dtype)

  def observe_first(self, timestep):
    pass

  def observe(self, action, next_timestep):
    pass

  def update(self, wait=False):
    pass


class Replay:
  """A fresh in-process reverb server with one transition table."""

  def __init__(self, spec, max_size):
    table = replay.make_replay_table(
        spec, name=replay.DEFAULT_TABLE, max_size=max_size, min_size=1,
        samples_per_insert=1.0,  # unused by the 'min_size' limiter
        rate_limiter='min_size')
    self.server = reverb.Server([table], port=None)
    self.client = reverb.Client(f'localhost:{self.server.port}')

  def items(self):
    return replay.num_items(self.client, replay.DEFAULT_TABLE)

  def stop(self):
    self.client = None
    gc.collect()
    self.server.stop()


def run_random(env, episodes, rng):
  spec = env.action_spec()
  lo, hi, shape = spec.minimum, spec.maximum, spec.shape
  steps = 0
  for _ in range(episodes):
    ts = env.reset()
    while not ts.last():
      ts = env.step(rng.uniform(lo, hi, shape))
      steps += 1
  return steps


def run_actor(env, actor, episodes, sw=None):
  """`episodes` episodes of our actor loop; returns steps.

  The one-environment loop of an acme Actor with an Adder (the runners'
  loops.ActorLoop with several environments: bench_actors.py). With `sw` (a
  Stopwatch, --breakdown) each piece is timed (the timers cost a little).
  """
  if sw is None:
    steps = 0
    for _ in range(episodes):
      ts = env.reset()
      actor.observe_first(ts)
      while not ts.last():
        action = actor.select_action(ts.observation)
        ts = env.step(action)
        actor.observe(action, ts)
        actor.update()
        steps += 1
    return steps
  steps = 0
  for _ in range(episodes):
    with sw('reset+observe_first'):
      ts = env.reset()
      actor.observe_first(ts)
    while not ts.last():
      with sw('select_action'):
        action = actor.select_action(ts.observation)
      with sw('env.step (wrapped)'):
        ts = env.step(action)
      with sw('observe (writer.add)'):
        actor.observe(action, ts)
      with sw('update (variable client)'):
        actor.update()
      steps += 1
  return steps


class Domain:
  """Environments, policy and actors for one domain; measures each variant."""

  def __init__(self, name, args):
    self.name = name
    domain, task = name.split(':')
    self.episodes = max(1, math.ceil(args.steps / 1000))
    self.max_size = 2 * self.episodes * 1000 + 100
    self.raw_env = suite.load(domain, task, task_kwargs={'random': 0})
    self.envs = {
        v: (acme_wrappers.make_acme_environment if v in ACME_WRAPPED else
            environments.make_environment)(domain, task, seed=i)
        for i, v in enumerate(VARIANTS) if v != 'raw'}
    assert (self.envs['wrapped'].observation_spec() ==
            self.envs['wrapped_acme'].observation_spec())
    self.spec = environments.environment_spec(self.envs['wrapped'])
    self.policy, self.source = common.policy_source(self.spec)
    self.rng = np.random.default_rng(0)
    warm = self._actor(None)  # compile the jitted policy step outside timing
    warm.select_action(self.envs['ours_fast'].reset().observation)
    self.items = {}

  def _actor(self, adder):
    client = acting.VariableClient(self.source, 'policy', update_period=1000)
    actor = acting.WPOActor(self.policy, client, seed=0)
    return actor if adder is None else nstep_adder.AdderActor(actor, adder)

  def measure(self, variant, sw=None):
    """Runs one measurement; returns (steps, seconds)."""
    env = self.envs.get(variant)
    rep = Replay(self.spec, self.max_size) if variant in WRITER_VARIANTS else None
    adder = actor = loop = None
    try:
      if variant == 'raw':
        t0 = time.perf_counter()
        steps = run_random(self.raw_env, self.episodes, self.rng)
      elif variant in ('wrapped', 'wrapped_acme'):
        t0 = time.perf_counter()
        steps = run_random(env, self.episodes, self.rng)
      elif variant == 'acme_loop':
        adder = acme_reverb.NStepTransitionAdder(
            rep.client, n_step=N_STEP, discount=DISCOUNT,
            priority_fns={replay.DEFAULT_TABLE: None})
        counter = counting.Counter()
        loop = environment_loop.EnvironmentLoop(
            env, nstep_adder.AdderActor(RandomActor(self.spec.actions), adder),
            counter=counter,
            logger=loggers.NoOpLogger())
        t0 = time.perf_counter()
        loop.run(num_episodes=self.episodes)
        steps = counter.get_counts()['steps']
      else:
        if variant == 'ours_acme':
          adder = acme_adder.make_adder(rep.client, table=replay.DEFAULT_TABLE,
                                        n_step=N_STEP, discount=DISCOUNT)
        elif variant in ('ours_fast', 'ours_fast_acmeenv'):
          adder = nstep_adder.make_adder(
              rep.client, table=replay.DEFAULT_TABLE, n_step=N_STEP,
              discount=DISCOUNT)
        actor = self._actor(adder)
        actor.select_action(env.reset().observation)  # params to CPU
        t0 = time.perf_counter()
        steps = run_actor(env, actor, self.episodes, sw)
      dt = time.perf_counter() - t0
      if rep is not None:
        if hasattr(adder, 'close'):
          adder.close()
        adder = actor = loop = None  # acme's adder flushes in __del__
        gc.collect()
        self.items.setdefault(variant, []).append(rep.items())
    finally:
      if rep is not None:
        rep.stop()
    return steps, dt


def report_domain(dom, args, rates):
  """Prints one domain's table, ratios and wrapper overheads; returns its
  JSON record."""
  med = common.medians(rates)
  print(f'\n{dom.name}: obs {dom.spec.observations.shape[0]}  act '
        f'{dom.spec.actions.shape[0]}  {dom.episodes} episodes x '
        f'{args.repeats} repeats per variant  (load avg {load_average()})')
  base = med.get('raw')
  print_table(['variant', 'steps/s', 'runs', 'us/step', 'x raw',
               'table items'],
              [[v, med[v], spread(rates[v]), 1e6 / med[v],
                med[v] / base if base else float('nan'),
                str(dom.items.get(v, [''])[-1])] for v in rates])
  ratios = common.ratios(med, (
      ('ours_fast', 'acme_loop'), ('ours_fast', 'raw'),
      ('ours_fast_acmeenv', 'acme_loop'), ('ours_fast_acmeenv', 'raw'),
      ('ours_fast', 'ours_acme'), ('ours_noadd', 'raw'),
      ('wrapped', 'wrapped_acme')))
  print('ratios: ' + '  '.join(f'{k} {x:.2f}' for k, x in ratios.items()))
  if 'raw' in med:
    over = {v: 1e6 / med[v] - 1e6 / med['raw']
            for v in ('wrapped', 'wrapped_acme') if v in med}
    if over:
      print('wrapper overhead over raw (us/step, medians): ' + '  '.join(
          f'{v} {x:.1f}' for v, x in over.items()))
  return {'steps_per_s': med, 'runs': rates, 'ratios': ratios,
          'items': dom.items}


def breakdown(dom):
  """Times the pieces of one ours_fast pass; prints them, returns us/step."""
  sw = Stopwatch()
  steps, dt = dom.measure('ours_fast', sw)
  print(f'breakdown of ours_fast ({steps} steps, {steps / dt:,.0f} '
        'steps/s with timers):')
  print_table(['piece', 'us/step', '%'],
              [[k, 1e6 * s / steps, 100 * s / dt]
               for k, s in sorted(sw.totals.items(), key=lambda x: -x[1])])
  return {k: 1e6 * s / steps for k, s in sw.totals.items()}


def main(argv=None):
  args = parse_args(argv)
  variants = [v for v in args.variants.split(',') if v]
  bad = sorted(set(variants) - set(VARIANTS))
  if bad:
    raise SystemExit(f'unknown variants {bad}; valid: {list(VARIANTS)}')
  print(f'jax devices: {jax.devices()}  cpus: {os.cpu_count()}  '
        f'load avg: {load_average()}')
  record = {'args': vars(args), 'domains': {}}
  t_start = time.perf_counter()
  for name in args.domains.split(','):
    dom = Domain(name, args)
    rates = {v: [] for v in variants}
    for _, v in common.interleave(variants, args.repeats):
      steps, dt = dom.measure(v)
      rates[v].append(steps / dt)
    drec = report_domain(dom, args, rates)
    if args.breakdown:
      drec['breakdown_us_per_step'] = breakdown(dom)
    record['domains'][name] = drec
  print(f'\ntotal {time.perf_counter() - t_start:.0f} s')
  if args.json:
    emit_json(record)


if __name__ == '__main__':
  main()
