"""Cost of checkpointing the replay buffer (what a resumable run pays).

Fills a fresh in-process reverb table (replay.make_replay_table, the humanoid
spec: obs 67, act 21) through the fast n-step writer (n = 5; acme's Adder API
over nstep_writer.TransitionWriter, tests/nstep_adder.py) with synthetic
1000-step episodes, then times, for each size in --items:
  checkpoint   client.checkpoint() into replay.make_checkpointer(dir)
               (what single_process.save() and the distributed learner call)
  size         bytes on disk of that checkpoint
  restore      building a new server with the same checkpointer (it loads the
               newest checkpoint on start) until it reports the items
Also: fill rate (items/s written) and process peak RSS. Table sizes grow in
one process, so the rows share the warm-up; the figures are seconds, not
ratios, and on a shared machine expect +-30 %.

  MUJOCO_GL=egl .venv/bin/python bench/bench_replay_checkpoint.py \
      --items 100000,300000 [--workdir /tmp/replay-bench] [--json]
"""

import os
import shutil
import tempfile
import time

import common
from common import emit_json, peak_rss_mb, print_table

# acme's Adder API over our writer lives with the tests.
common.tests_on_path()

os.environ.setdefault('MUJOCO_GL', 'egl')

import dm_env  # noqa: E402
import numpy as np  # noqa: E402
import reverb  # noqa: E402

from wpo_agent import environments  # noqa: E402
from wpo_agent import replay  # noqa: E402
import nstep_adder  # noqa: E402


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def _fill(adder, spec, episodes: int, rng) -> None:
  obs_dim = spec.observations.shape[0]
  act_dim = spec.actions.shape[0]
  for _ in range(episodes):
    obs = rng.standard_normal((1001, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, (1000, act_dim)).astype(np.float32)
    rewards = rng.uniform(0, 1, 1000).astype(np.float32)
    adder.add_first(dm_env.restart(obs[0]))
    for t in range(1000):
      step = (dm_env.truncation if t == 999 else dm_env.transition)(
          np.float32(rewards[t]), obs[t + 1], np.float32(1.0))
      adder.add(actions[t], step)


def _grow_and_checkpoint(client, adder, spec, new_items, make_server, rng):
  """Writes `new_items` more, checkpoints, restores into a new server; the
  row of figures."""
  start = time.perf_counter()
  _fill(adder, spec, new_items // 1000, rng)
  adder.flush()
  fill_rate = new_items / (time.perf_counter() - start)
  items = replay.num_items(client, replay.DEFAULT_TABLE)
  start = time.perf_counter()
  path = client.checkpoint()  # reverb keeps only the newest
  checkpoint_s = time.perf_counter() - start
  bytes_ = _dir_bytes(path)
  start = time.perf_counter()
  restored = make_server()
  restored_items = replay.num_items(
      reverb.Client(f'localhost:{restored.port}'), replay.DEFAULT_TABLE)
  restore_s = time.perf_counter() - start
  restored.stop()
  return dict(items=items, fill_items_per_s=fill_rate,
              checkpoint_s=checkpoint_s, checkpoint_mb=bytes_ / 2**20,
              restore_s=restore_s, restored_items=restored_items,
              peak_rss_mb=peak_rss_mb())


def main():
  parser = common.add_flags(
      common.parser(__doc__), domain='humanoid', task='run', workdir=None,
      json=False, helps=dict(workdir='where checkpoints go (default: a temp '
                             'dir)'))
  parser.add_argument('--items', default='100000,300000',
                      help='comma-separated table sizes (multiples of 1000)')
  args = parser.parse_args()
  sizes = sorted(common.ints(args.items))
  spec = environments.environment_spec(
      environments.make_environment(args.domain, args.task, seed=0))
  root = args.workdir or tempfile.mkdtemp(prefix='replay-bench-')

  def make_server():  # it loads the newest checkpoint in root on start
    table = replay.make_replay_table(
        spec, name=replay.DEFAULT_TABLE, max_size=sizes[-1], min_size=1,
        samples_per_insert=1.0,  # unused by the 'min_size' limiter
        rate_limiter='min_size')
    return reverb.Server([table], port=None,
                         checkpointer=replay.make_checkpointer(root))

  server = make_server()
  client = reverb.Client(f'localhost:{server.port}')
  adder = nstep_adder.make_adder(client, table=replay.DEFAULT_TABLE, n_step=5,
                                 discount=0.99)
  rng = np.random.default_rng(0)
  rows = [_grow_and_checkpoint(client, adder, spec, size - filled,
                               make_server, rng)
          for filled, size in zip([0] + sizes[:-1], sizes)]
  print(f'{args.domain}-{args.task}: obs {spec.observations.shape}, '
        f'act {spec.actions.shape}; checkpoints under {root}')
  print_table(['items', 'fill items/s', 'checkpoint s', 'size MB',
               'restore s', 'restored', 'peak RSS MB'],
              [[r['items'], r['fill_items_per_s'], r['checkpoint_s'],
                r['checkpoint_mb'], r['restore_s'], r['restored_items'],
                r['peak_rss_mb']] for r in rows])
  if args.json:
    for r in rows:
      emit_json(dict(r, domain=args.domain, task=args.task))
  server.stop()
  if args.workdir is None:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
