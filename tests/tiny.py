"""Tiny settings for the tests' fast real runs and small learners.

`config(**overrides)` is a WPOConfig with tiny networks and learner (layers
(16, 16), batch 32, N = 4 action samples); `flags(**overrides)` the same as
`--set=name=value` flags for launch/run_local.py and launch/run_suite.py, plus
a launched run's replay (learning starts after 200 inserts, samples_per_insert
32 = batch: one SGD step per actor step); `FLAGS` is `flags()`.
`network_kwargs(**overrides)` is make_networks' keyword arguments for the
tiny networks on the default ('acme') preset.

Where a test needs another value (its counts depend on it), it passes it at
the call site, e.g. `tiny.flags(min_replay_size=256)`, so that the difference
shows where it matters.

A helper module, not conftest.py: conftest is for fixtures and hooks, which
pytest finds by itself, and is not meant to be imported; these are plain values
that test files import as `import tiny`, as they import nstep_adder.
"""

from wpo_agent import config as config_lib

# Tiny networks, and a tiny learner step over them.
NETWORKS = dict(policy_layer_sizes=(16, 16), critic_layer_sizes=(16, 16))
LEARNER = dict(batch_size=32, num_action_samples=4)
# A launched run's replay: 200 inserts before learning, then samples_per_insert
# = batch_size, one SGD step per actor step.
RUN = dict(min_replay_size=200, samples_per_insert=32)


def config(preset='small', **overrides):
  """`preset` with NETWORKS and LEARNER, then `overrides`."""
  return config_lib.make_config(preset, **{**NETWORKS, **LEARNER, **overrides})


def network_kwargs(preset='acme', **overrides):
  """make_networks' keyword arguments: `preset` with NETWORKS, then
  `overrides`."""
  return config_lib.make_config(preset, **{**NETWORKS,
                                           **overrides}).network_kwargs()


def _flag_value(value):
  if isinstance(value, tuple):
    return ','.join(str(v) for v in value)
  return str(value)


def flags(**overrides):
  """NETWORKS, LEARNER and RUN, then `overrides`, as `--set=name=value`."""
  settings = {**NETWORKS, **LEARNER, **RUN, **overrides}
  return [f'--set={name}={_flag_value(value)}'
          for name, value in settings.items()]


FLAGS = flags()
