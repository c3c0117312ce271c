"""Replay feed capacity and learner updates/s on each replay backend.

--mode feed: batches of B transitions per second each backend delivers to a
  learner whose SGD step is a no-op (a jitted sum over the batch, so the data
  must arrive), while inserter processes write n-step items through the
  actors' own writer (nstep_writer) at the rate a `--learner-rate` updates/s
  learner needs at `--spi` (2,000 x 256 / 32 = 16,000 items/s by default).
  The ratio is not enforced here (reverb: MinSize table; device: an
  unbounded gate), so the figure is what the backend can deliver.
--mode learner: the real WPOLearner (humanoid sizes, 'acme' preset with the
  paper's critic) fed by each backend, updates/s for each K in --ks; the
  inserters keep the replay growing, again without a ratio limit.

The reverb server runs in its own process, as in the distributed program.
Backends and Ks are measured in alternating windows in one run.

  MUJOCO_GL=egl .venv/bin/python bench/bench_feed.py --mode feed
"""

import multiprocessing as mp
import time

import common
from common import median

import jax
import jax.numpy as jnp
import numpy as np

_TABLE = {'reverb': 'priority_table', 'device': 'transport'}


def _spec(domain, task):
  from wpo_agent import environments  # pylint: disable=g-import-not-at-top
  return environments.environment_spec(
      environments.make_environment(domain, task, seed=0))


def _serve(backend, domain, task, capacity, port_out, stop):
  """Replay process: the table the backend's actors write to."""
  import reverb  # pylint: disable=g-import-not-at-top
  from wpo_agent import device_feed, replay  # pylint: disable=g-import-not-at-top
  spec = _spec(domain, task)
  if backend == 'device':
    table = replay.make_transport_table(spec, name=_TABLE[backend],
                                        max_size=device_feed.transport_size(
                                            samples_per_insert=32.0,
                                            min_size=1000),
                                        rows_per_item=device_feed.TRANSPORT_ROWS)
  else:
    table = replay.make_replay_table(
        spec, name=_TABLE[backend], max_size=capacity, min_size=1000,
        samples_per_insert=32.0, rate_limiter='min_size')
  server = reverb.Server([table], port=None)
  port_out.value = server.port
  stop.wait()
  server.stop()


def _insert(address, table, domain, task, rate, stop, count):
  """Inserter process: an actor's n-step writer (one environment) at `rate`
  steps/s: chunks into the transport (device), transitions (reverb)."""
  import reverb  # pylint: disable=g-import-not-at-top
  from wpo_agent import device_feed, replay  # pylint: disable=g-import-not-at-top
  spec = _spec(domain, task)
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(64, 1) + spec.observations.shape).astype(np.float32)
  act = rng.uniform(-1, 1, (64, 1) + spec.actions.shape).astype(np.float32)
  writer = replay.make_stream_writer(
      reverb.Client(address), table=table, n_step=5, discount=0.99,
      num_streams=1, rows_per_item=(device_feed.TRANSPORT_ROWS
                                    if table == 'transport' else None))
  one, no = np.ones(1, np.float32), np.zeros(1, bool)
  start, steps = time.time(), 0
  while not stop.is_set():
    writer.start(0, obs[0, 0])
    for t in range(1000):
      writer.add(actions=act[t % 64], rewards=one, discounts=one,
                 next_observations=obs[(t + 1) % 64], last=no)
      steps += 1
      if steps % 200 == 0:
        count.value = steps
        ahead = steps / rate - (time.time() - start)
        if ahead > 0:
          time.sleep(ahead)
        if stop.is_set():
          break
  writer.close()


class _Backend:
  """One backend's replay process, inserters and learner-side source."""

  def __init__(self, name, args, inserters):
    self.name = name
    ctx = mp.get_context('spawn')
    self._stop = ctx.Event()
    port = ctx.Value('i', 0)
    self._procs = [ctx.Process(target=_serve, daemon=True, args=(
        name, args.domain, args.task, args.capacity, port, self._stop))]
    self._procs[0].start()
    while not port.value:
      time.sleep(0.05)
    self.address = f'localhost:{port.value}'
    self.inserted = [ctx.Value('l', 0) for _ in range(inserters)]
    for count in self.inserted:
      self._procs.append(ctx.Process(target=_insert, daemon=True, args=(
          self.address, _TABLE[name], args.domain, args.task,
          args.learner_rate * args.batch / args.spi / inserters, self._stop,
          count)))
      self._procs[-1].start()

  def items(self):
    return sum(c.value for c in self.inserted)

  def close(self):
    self._stop.set()
    for p in self._procs:
      p.join(timeout=10)
      if p.is_alive():
        p.kill()


def _noop_sources(backend, args, k, mesh):
  """A callable running one no-op learner call of K batches."""
  from wpo_agent import device_feed, device_replay, replay  # pylint: disable=g-import-not-at-top
  if backend.name == 'reverb':
    it = replay.make_dataset_iterator(backend.address, table='priority_table',
                                      batch_size=args.batch, num_sgd_steps=k,
                                      prefetch=4)
    reduce = jax.jit(lambda b: sum(jnp.sum(x) for x in b))
    return lambda: reduce(next(it))
  spec = _spec(args.domain, args.task)
  buffer = device_replay.DeviceReplay(
      device_replay.transition_item(spec), capacity=args.capacity,
      batch_size=args.batch, mesh=mesh)
  feed = device_feed.DeviceFeed(
      buffer, replay.make_transport_iterator(
          backend.address, table='transport', chunk_size=buffer.chunk_size,
          rows_per_item=device_feed.TRANSPORT_ROWS),
      samples_per_insert=1.0, keep_ratio=False, sgd_steps_per_call=k,
      min_size=1000)

  def calls(state, key):
    def one(total, key):
      return total + sum(jnp.sum(x) for x in buffer.sample(state, key)), None
    return jax.lax.scan(one, 0.0, jax.random.split(key, k))[0]
  call = jax.jit(calls)

  def step():
    # Drain whatever the inserters wrote, as a learner at the ratio would.
    while feed.pull(timeout=None):
      pass
    feed.wait_until_owed()
    out = call(feed.state, jax.random.PRNGKey(feed.gate.calls))
    feed.called()
    return out
  return step


def _learners(backend, args, k, mesh):
  from wpo_agent import builder, config as config_lib, runs  # pylint: disable=g-import-not-at-top
  config = config_lib.make_config(
      'acme', critic_layer_sizes=common.PAPER_CRITIC, batch_size=args.batch,
      sgd_steps_per_learner_step=k, max_replay_size=args.capacity,
      samples_per_insert=1e9, rate_limiter='min_size',
      replay_backend=backend.name)
  run = runs.RunOptions(domain=args.domain, task=args.task,
                        workdir='/tmp/bench-feed', tensorboard=False)
  learner = builder.Builder(config, run).learner(backend.address, None)
  return learner.step


def parse_args(argv=None):
  p = common.parser(__doc__)
  p.add_argument('--mode', choices=('feed', 'learner'), default='feed')
  p.add_argument('--backends', default='reverb,device')
  p.add_argument('--inserters', type=int, default=1)
  common.add_flags(p, ks='1,8', domain='humanoid', task='run', batch=256,
                   spi=32.0, learner_rate=2000.0, capacity=200_000,
                   seconds=10.0, windows=3, json_file=None,
                   helps=dict(seconds='per window'))
  return p.parse_args(argv)


def main():
  args = parse_args()
  from wpo_agent import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(jax.local_devices())
  backends = {b: _Backend(b, args, args.inserters)
              for b in args.backends.split(',')}
  make = _noop_sources if args.mode == 'feed' else _learners
  print(f'devices: {jax.devices()}; mode {args.mode}; insert target '
        f'{args.learner_rate * args.batch / args.spi:.0f} items/s')
  rates, inserts = {}, {}
  try:
    time.sleep(5)  # let the replay reach min_size
    steps = {(b.name, k): make(b, args, k, mesh)
             for b in backends.values() for k in args.ks}
    for fn in steps.values():  # compile and warm up
      for _ in range(3):
        jax.block_until_ready(fn())
    rates = {key: [] for key in steps}
    inserts = {name: [] for name in backends}
    for _, (name, k) in common.interleave(steps, args.windows):
      backend = backends[name]
      items0 = backend.items()
      calls, dt, _ = common.run_window(steps[(name, k)], args.seconds,
                                       sync=jax.block_until_ready)
      rates[(name, k)].append(calls * k / dt)
      inserts[name].append((backend.items() - items0) / dt)
      # After every window, so a run cut short by a time limit still
      # leaves what it measured.
      common.write_json(args.json, _summary(args, rates, inserts))
  finally:
    for b in backends.values():
      b.close()
  _summary(args, rates, inserts, say=print)


def _summary(args, rates, inserts, say=lambda *a: None):
  unit = 'batches/s' if args.mode == 'feed' else 'updates/s'
  results = dict(mode=args.mode, devices=str(jax.devices()),
                 batch=args.batch, domain=args.domain, task=args.task)
  for (name, k), r in rates.items():
    if r:
      results[f'{name}_k{k}'] = dict(backend=name, k=k, rate=median(r),
                                     rates=r, unit=unit)
      say(f'{name:7s} K={k:3d}: {median(r):9.1f} {unit} (windows '
          f'{", ".join(f"{x:.0f}" for x in r)})')
  for name, r in inserts.items():
    if r:
      results[f'{name}_inserts_per_s'] = median(r)
      say(f'{name:7s} inserts during its windows: {median(r):.0f} items/s')
  return results


if __name__ == '__main__':
  main()
