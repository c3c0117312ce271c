"""One measurement for bench_vs_commit.py, against whichever `wpo_agent` is
on PYTHONPATH (this tree's or an older commit's); prints one JSON line.

Adapts to the run-layer APIs: before the builder (WPOLearner without a
mesh, [B] batches for K = 1, replay.make_adder, the loop written out in each
runner) and after it (mesh, [K, B] always, loops.ActorLoop), with one
environment per actor (replay.make_writer, WPOActor(adder=...)) or, since
issue 13, E environments (acting.VectorActor, replay.make_stream_writer).
The older calls are those commits' APIs; this tree has only the last ones.
"""

import argparse
import inspect
import json
import time

import jax
import numpy as np

from wpo_agent import acting
from wpo_agent import config as config_lib
from wpo_agent import environments
from wpo_agent import learner as learner_lib
from wpo_agent import networks as networks_lib
from wpo_agent import replay
from wpo_agent.types import Batch

NEW_API = 'mesh' in inspect.signature(learner_lib.WPOLearner).parameters


def _networks_kwargs(**sizes):
  cfg = config_lib.make_config('acme', **sizes)
  if NEW_API:
    return cfg.network_kwargs()
  return sizes  # the old make_networks had defaults for the rest


def learner_rates(ks, seconds):
  nets = networks_lib.make_networks(
      67, -np.ones(21), np.ones(21), **_networks_kwargs(
          policy_layer_sizes=(256, 256, 256), critic_layer_sizes=(512, 512, 256)))
  out = {}
  for k in ks:
    cfg = config_lib.make_config('acme', critic_layer_sizes=(512, 512, 256),
                                 sgd_steps_per_learner_step=k)
    rng = np.random.default_rng(0)
    lead = (k, 256) if (NEW_API or k > 1) else (256,)
    f32 = np.float32
    batch = Batch(rng.standard_normal(lead + (67,)).astype(f32),
                  rng.uniform(-1, 1, lead + (21,)).astype(f32),
                  rng.standard_normal(lead).astype(f32),
                  np.full(lead, 0.95, f32),
                  rng.standard_normal(lead + (67,)).astype(f32))
    iterator = iter(lambda: batch, None)
    kwargs = {}
    if NEW_API:
      from wpo_agent import sharding  # pylint: disable=g-import-not-at-top
      kwargs = dict(mesh=sharding.make_mesh(jax.local_devices()[:1]),
                    logger=None)
    learner = learner_lib.WPOLearner(nets, cfg, iterator,
                                     jax.random.PRNGKey(0), **kwargs)
    for _ in range(3):
      learner.step()
    jax.block_until_ready(learner.state)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
      learner.step()
      calls += 1
    jax.block_until_ready(learner.state)
    out[f'learner K={k}'] = calls * k / (time.perf_counter() - t0)
  return out


def actor_rate(steps):
  import reverb  # pylint: disable=g-import-not-at-top
  env = environments.make_environment('cheetah', 'run', seed=0)
  spec = environments.environment_spec(env)
  nets = networks_lib.make_networks_from_spec(spec, **_networks_kwargs(
      policy_layer_sizes=(256, 256, 256), critic_layer_sizes=(16,)))
  params = nets.init(jax.random.PRNGKey(0))[0]
  source = acting.StaticVariableSource(policy=params)
  client_of = lambda: acting.VariableClient(source, 'policy', 1000)  # noqa: E731
  if NEW_API:
    from wpo_agent import loops  # pylint: disable=g-import-not-at-top
    table = replay.make_replay_table(
        spec, name=replay.DEFAULT_TABLE, max_size=10 * steps, min_size=1,
        samples_per_insert=1.0, rate_limiter='min_size')
    server = reverb.Server([table], port=None)
    client = reverb.Client(f'localhost:{server.port}')
    if hasattr(acting, 'VectorActor'):  # issue 13: E environments, E = 1
      writer = replay.make_stream_writer(
          client, table=replay.DEFAULT_TABLE, n_step=5, discount=0.99,
          num_streams=1, rows_per_item=None)
      loop = loops.ActorLoop(
          [env], acting.VectorActor(nets.policy, client_of(), seeds=[0]),
          writer)
    else:
      writer = replay.make_writer(client, table=replay.DEFAULT_TABLE,
                                  n_step=5, discount=0.99)
      actor = acting.WPOActor(nets.policy, client_of(), seed=0, adder=writer)
      loop = loops.ActorLoop(env, actor)
    loop.run(1000)  # warm-up: compile, first chunks
    t0 = time.perf_counter()
    loop.run(steps)
  else:
    table = replay.make_replay_table(spec, max_size=10 * steps, min_size=1,
                                     rate_limiter='min_size')
    server = reverb.Server([table], port=None)
    client = reverb.Client(f'localhost:{server.port}')
    writer = replay.make_adder(client, 5, 0.99)
    actor = acting.WPOActor(nets.policy, client_of(), seed=0, adder=writer)

    def run(n):  # the loop body of the old runners (nodes.run_actor)
      done = 0
      while done < n:
        timestep = env.reset()
        actor.observe_first(timestep)
        while not timestep.last() and done < n:
          action = actor.select_action(timestep.observation)
          timestep = env.step(action)
          actor.observe(action, next_timestep=timestep)
          actor.update()
          done += 1
    run(1000)
    t0 = time.perf_counter()
    run(steps)
  rate = steps / (time.perf_counter() - t0)
  writer.close()
  server.stop()
  return {'actor steps/s': rate}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('what', choices=('learner', 'actor'))
  p.add_argument('--seconds', type=float, default=8.0)
  p.add_argument('--ks', default='1,8')
  p.add_argument('--steps', type=int, default=4000)
  args = p.parse_args()
  if args.what == 'learner':
    out = learner_rates([int(k) for k in args.ks.split(',')], args.seconds)
  else:
    out = actor_rate(args.steps)
  print(json.dumps(out))


if __name__ == '__main__':
  main()
