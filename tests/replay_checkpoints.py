"""Test helper: read back a run's replay checkpoint with a fresh server."""

import reverb

from wpo_agent import environments
from wpo_agent import replay


def items_in_checkpoint(workdir, domain='cartpole', task='swingup'):
  """Items in the replay checkpoint under `workdir` (0 when there is none)."""
  spec = environments.environment_spec(
      environments.make_environment(domain, task, seed=0))
  table = replay.make_replay_table(
      spec, name=replay.DEFAULT_TABLE, max_size=1_000_000, min_size=1,
      samples_per_insert=1.0, rate_limiter='min_size')
  server = reverb.Server([table], port=None,
                         checkpointer=replay.make_checkpointer(str(workdir)))
  try:
    return replay.num_items(reverb.Client(f'localhost:{server.port}'),
                            replay.DEFAULT_TABLE)
  finally:
    server.stop()
