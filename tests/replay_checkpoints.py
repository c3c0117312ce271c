"""Test helper: read back a run's replay checkpoint with a fresh server."""

import reverb

from wpo_agent import environments
from wpo_agent import replay


def items_in_checkpoint(workdir, domain='cartpole', task='swingup'):
  """Items in the replay checkpoint under `workdir` (0 when there is none)."""
  spec = environments.environment_spec(
      environments.make_environment(domain, task))
  table = replay.make_replay_table(spec, max_size=1_000_000, min_size=1,
                                   rate_limiter='min_size')
  server = reverb.Server([table], port=None,
                         checkpointer=replay.make_checkpointer(str(workdir)))
  try:
    return replay.num_items(reverb.Client(f'localhost:{server.port}'))
  finally:
    server.stop()
