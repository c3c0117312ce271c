"""One actor process, E environments per policy call: env steps/s vs raw stepping.

Per domain, env steps/s of (variants interleaved, --repeats times, medians):
  raw         dm_control suite.load(...) stepped with uniform random actions
              (one environment; the issue's reference)
  chunks_E    loops.ActorLoop over E environments, VectorActor (policy
              (256,256,256)), ChunkWriter into a transport queue: the device
              backend's actor, writes included
  items_E     the same with TransitionWriter (one reverb item per
              transition): the reverb backend's actor
  none_E      the same loop without any writer (policy + environments)
Every loop variant makes --steps environment steps in whole rounds (E
environments from one reset each); the writers go to a fresh in-process
reverb table per measurement.

--rss also measures each E's memory: a child process (the actor: E
environments, the policy, a ChunkWriter to this process's reverb server)
runs --steps steps and reports its resident set size.

  MUJOCO_GL=egl .venv/bin/python bench/bench_actors.py \
      --domains cheetah:run,humanoid:run --envs 1,4,8,16 --repeats 3 --rss
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import common
from common import current_rss_mb, emit_json, load_average, print_table, \
    spread

os.environ.setdefault('MUJOCO_GL', 'egl')

from dm_control import suite  # noqa: E402
import numpy as np  # noqa: E402
import reverb  # noqa: E402

from wpo_agent import acting  # noqa: E402
from wpo_agent import device_feed  # noqa: E402
from wpo_agent import environments  # noqa: E402
from wpo_agent import loops  # noqa: E402
from wpo_agent import replay  # noqa: E402

N_STEP, DISCOUNT = 5, 0.99
ROWS = device_feed.TRANSPORT_ROWS


def parse_args(argv=None):
  p = common.add_flags(
      common.parser(__doc__), domains='cheetah:run,humanoid:run', steps=16000,
      repeats=3, json=False,
      helps=dict(steps='environment steps per measurement'))
  p.add_argument('--envs', default='1,4,8,16',
                 help='environments per actor for the chunks_E variants')
  p.add_argument('--items_envs', default='1,8',
                 help='E of the items_E variants (reverb backend)')
  p.add_argument('--none_envs', default='8',
                 help='E of the none_E variants (no writes)')
  p.add_argument('--rss', action='store_true',
                 help='also measure each E in a child process (RSS)')
  p.add_argument('--rss_child', default=None, help=argparse.SUPPRESS)
  return p.parse_args(argv)


def _table(kind, spec, steps):
  if kind == 'chunks':
    return replay.make_transport_table(spec, name='t',
                                       max_size=steps // ROWS + 16,
                                       rows_per_item=ROWS)
  return replay.make_replay_table(spec, name='t', max_size=steps + 1000,
                                  min_size=1, samples_per_insert=1.0,
                                  rate_limiter='min_size')


def _writer(kind, client, num):
  if kind == 'none':
    return None
  return replay.make_stream_writer(
      client, table='t', n_step=N_STEP, discount=DISCOUNT, num_streams=num,
      rows_per_item=ROWS if kind == 'chunks' else None)


class Domain:
  """One domain's environments and policy; measures each variant."""

  def __init__(self, name, max_envs):
    domain, task = name.split(':')
    self.raw = suite.load(domain, task, task_kwargs={'random': 0})
    self.envs = [environments.make_environment(domain, task, seed=i)
                 for i in range(max_envs)]
    self.spec = environments.environment_spec(self.envs[0])
    self.policy, self.source = common.policy_source(self.spec)
    self.actors = {}
    self.rng = np.random.default_rng(0)

  def actor(self, num):
    if num not in self.actors:  # compiled outside the timing
      actor = acting.VectorActor(self.policy,
                                 acting.VariableClient(self.source, 'policy'),
                                 seeds=range(num))
      actor.select_actions(np.zeros((num,) + self.spec.observations.shape))
      self.actors[num] = actor
    return self.actors[num]

  def measure(self, variant, steps):
    """(env steps, seconds) of one measurement."""
    if variant == 'raw':
      spec = self.raw.action_spec()
      t0, done = time.perf_counter(), 0
      while done < steps:
        ts = self.raw.reset()
        while not ts.last():
          ts = self.raw.step(self.rng.uniform(spec.minimum, spec.maximum,
                                              spec.shape))
          done += 1
      return done, time.perf_counter() - t0
    kind, num = variant.rsplit('_', 1)
    num = int(num)
    server = client = writer = None
    if kind != 'none':
      server = reverb.Server([_table(kind, self.spec, steps)], port=None)
      client = reverb.Client(f'localhost:{server.port}')
    try:
      writer = _writer(kind, client, num)
      loop = loops.ActorLoop(self.envs[:num], self.actor(num), writer)
      t0 = time.perf_counter()
      while loop.steps < steps:
        loop.step()
      if writer is not None:
        writer.flush()  # every item confirmed: its cost is in the timing
      return loop.steps, time.perf_counter() - t0
    finally:
      if writer is not None:
        writer.close()
      writer = client = None
      gc.collect()
      if server is not None:
        server.stop()


def rss_child(args):
  """The child of --rss: an actor with E environments writing to a server
  in the parent; prints {'rss_mb': ...}."""
  address, name, num = args.rss_child.split(',')
  num = int(num)
  domain, task = name.split(':')
  envs = [environments.make_environment(domain, task, seed=i)
          for i in range(num)]
  policy, source = common.policy_source(environments.environment_spec(envs[0]))
  actor = acting.VectorActor(policy, acting.VariableClient(source, 'policy'),
                             seeds=range(num))
  writer = _writer('chunks', reverb.Client(address), num)
  loop = loops.ActorLoop(envs, actor, writer)
  loop.run(args.steps)
  writer.close()
  print(json.dumps(dict(rss_mb=current_rss_mb())))


def measure_rss(name, spec, nums, steps):
  """RSS (MB) of a child actor process per E."""
  out = {}
  for num in nums:
    server = reverb.Server([_table('chunks', spec, steps + 64 * num)],
                           port=None)
    try:
      proc = subprocess.run(
          [sys.executable, os.path.abspath(__file__), f'--steps={steps}',
           f'--rss_child=localhost:{server.port},{name},{num}'],
          capture_output=True, text=True, timeout=1200, check=True)
    finally:
      server.stop()
    out[num] = json.loads(proc.stdout.strip().splitlines()[-1])['rss_mb']
  return out


def main(argv=None):
  args = parse_args(argv)
  if args.rss_child:
    rss_child(args)
    return
  envs, items, none = (list(common.ints(x)) for x in (
      args.envs, args.items_envs, args.none_envs))
  variants = (['raw'] + [f'chunks_{e}' for e in envs] +
              [f'items_{e}' for e in items] + [f'none_{e}' for e in none])
  print(f'cpus: {os.cpu_count()}  load avg: {load_average()}  transport rows '
        f'per item: {ROWS}')
  record = {'args': vars(args), 'domains': {}}
  for name in args.domains.split(','):
    dom = Domain(name, max(envs + items + none))
    rates = {v: [] for v in variants}
    for _, v in common.interleave(variants, args.repeats):
      steps, dt = dom.measure(v, args.steps)
      rates[v].append(steps / dt)
    med = common.medians(rates)
    print(f'\n{name}: obs {dom.spec.observations.shape[0]}  act '
          f'{dom.spec.actions.shape[0]}  {args.steps} steps x {args.repeats} '
          f'repeats per variant (load avg {load_average()})')
    print_table(['variant', 'steps/s', 'runs', 'us/step', 'x raw'],
                [[v, med[v], spread(rates[v]), 1e6 / med[v],
                  med[v] / med['raw']] for v in variants])
    drec = {'steps_per_s': med, 'runs': rates,
            'x_raw': {v: med[v] / med['raw'] for v in variants}}
    if args.rss:
      drec['rss_mb'] = rss = measure_rss(name, dom.spec, envs, args.steps)
      print('actor process RSS (MB) by E: ' + '  '.join(
          f'E={e}: {mb:.0f}' for e, mb in rss.items()))
    record['domains'][name] = drec
  if args.json:
    emit_json(record)


if __name__ == '__main__':
  main()
