r"""Learner throughput with 2 simulated hosts vs 1, at the same per-host batch.

  .venv/bin/python bench/bench_multihost.py [--preset acme] [--k 8] [--seconds 20]

Runs, one after the other (never at once): one learner process with a
per-host batch B, then two learner processes joined over 127.0.0.1 by
jax.distributed (JAX's CPU collectives, gloo), each with its own device
replay and the same per-host batch B (global 2B). Humanoid-sized items
(obs 67, action 21), replay filled with random items, the real WPO step
(`learner.WPOLearner` over a `device_feed.DeviceFeed`). Prints learner
updates/s, samples/s (updates x global batch), the per-call exchange of the
hosts' control rows (distributed/hosts.py) and the share of a 2-host call
that is communication, 1 - t(1 host) / t(2 hosts) (the per-device work is
the same).
"""

import json
import os
import subprocess
import sys
import time

import common

OBS, ACT = common.HUMANOID_OBS, common.HUMANOID_ACT


def measure(args, hosts_lib=None) -> dict:
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from wpo_agent import device_feed, device_replay, sharding
  from wpo_agent import learner as learner_lib

  n = jax.process_count()
  config, networks = common.learner_setup(
      OBS, ACT, args.preset, batch_size=args.batch * n,
      sgd_steps_per_learner_step=args.k, max_replay_size=16384 * n,
      min_replay_size=128)
  item = common.item(OBS, ACT)
  rng = np.random.default_rng(jax.process_index())
  chunks = common.random_chunks(rng, 128, 128, item)
  replay = device_replay.DeviceReplay(
      item, capacity=16384, batch_size=args.batch,
      mesh=sharding.make_mesh(jax.local_devices()))
  feed = device_feed.DeviceFeed(
      replay, iter(chunks), samples_per_insert=1.0, keep_ratio=False,
      sgd_steps_per_call=args.k, min_size=128)
  learner = learner_lib.WPOLearner(
      networks, config, feed, jax.random.PRNGKey(0),
      mesh=sharding.make_mesh(jax.devices()), logger=None)
  for _ in chunks:
    feed.pull(timeout=60)
  learner.compile(item)
  for _ in range(3):
    learner.step()
  jax.block_until_ready(learner.state)
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < args.seconds:
    learner.step()
    calls += 1
    if hosts_lib is not None:  # every host must stop after the same call
      done = time.perf_counter() - start >= args.seconds
      if hosts_lib.exchange(np.array([done], np.int32)).max():
        break
  jax.block_until_ready(learner.state)
  elapsed = time.perf_counter() - start
  out = dict(hosts=n, per_host_batch=args.batch, k=args.k, calls=calls,
             updates_per_s=calls * args.k / elapsed,
             samples_per_s=calls * args.k * args.batch * n / elapsed)
  if hosts_lib is not None:
    row = hosts_lib.make_row(actor_steps=0, stop=0, save=False)
    t = time.perf_counter()
    for _ in range(200):
      hosts_lib.exchange(row)
    out['exchange_ms'] = (time.perf_counter() - t) / 200 * 1e3
  return out


def child(args) -> None:
  hosts_lib = None
  if args.host is not None:
    from wpo_agent.distributed import hosts as hosts_lib  # pylint: disable=g-import-not-at-top
    hosts_lib.join(coordinator_address=f'127.0.0.1:{args.port}', num_hosts=2,
                   host_id=args.host, timeout_s=120)
  result = measure(args, hosts_lib)
  print('RESULT ' + json.dumps(result), flush=True)
  os._exit(0)  # skip jax.distributed's exit barrier


def run(args, extra) -> list:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=common.ROOT)
  base = [sys.executable, __file__, '--child', '--preset', args.preset,
          '--k', str(args.k), '--batch', str(args.batch),
          '--seconds', str(args.seconds)]
  procs = [subprocess.Popen(base + e, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for e in extra]
  results = []
  for proc in procs:
    out, err = proc.communicate(timeout=args.seconds * 10 + 300)
    lines = [l for l in out.splitlines() if l.startswith('RESULT ')]
    if proc.returncode or not lines:
      raise SystemExit(f'a learner process failed:\n{err[-3000:]}')
    results.append(json.loads(lines[0][len('RESULT '):]))
  return results


def main():
  parser = common.add_flags(
      common.parser(__doc__), batch=256, seconds=20.0,
      helps=dict(batch='per-host batch', seconds='timed seconds per run'))
  parser.add_argument('--preset', default='acme')
  parser.add_argument('--k', type=int, default=8)
  parser.add_argument('--child', action='store_true')
  parser.add_argument('--host', type=int)
  parser.add_argument('--port', type=int)
  args = parser.parse_args()
  if args.child:
    child(args)
    return
  import portpicker  # pylint: disable=g-import-not-at-top
  [one] = run(args, [[]])
  port = str(portpicker.pick_unused_port())
  two = run(args, [['--host', '0', '--port', port],
                   ['--host', '1', '--port', port]])[0]
  share = 1 - (two['updates_per_s'] / one['updates_per_s'])
  print(f'preset {args.preset}, K={args.k}, per-host batch {args.batch}, '
        f'{args.seconds:.0f} s each, humanoid-sized items, CPU (gloo)')
  for r in (one, two):
    print(f'  {r["hosts"]} host(s): {r["updates_per_s"]:8.1f} updates/s  '
          f'{r["samples_per_s"]:10.0f} samples/s' +
          (f'  exchange {r["exchange_ms"]:.2f} ms/call'
           if 'exchange_ms' in r else ''))
  updates = two['updates_per_s'] / one['updates_per_s']
  samples = two['samples_per_s'] / one['samples_per_s']
  print(f'  2 hosts / 1 host: updates {updates:.2f}x, samples {samples:.2f}x; '
        f'communication share of a 2-host call: {share:.0%}')


if __name__ == '__main__':
  main()
