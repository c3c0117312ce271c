"""Whether a workdir's checkpoints can be resumed by this launch, and
config.json, which records what they were made with.

A launch on a workdir that holds checkpoints resumes them. What a checkpoint's
shapes depend on (task, algorithm, network sizes) may not change, nor a
replicated task's reward temperature (it defines the task); while the replay is
restored, neither may the replay table's settings in the run's mode (a
restored reverb table keeps its saved size and rate limiter). Everything else
may change on a resume, e.g. `eval_every`, which the resumed run follows.
Both runners call `write_run_config` before they write anything else.
"""

import json
import os
from typing import Any, Dict, Sequence

from wpo_agent import config as config_lib
from wpo_agent import replicas
from wpo_agent import runs
from wpo_agent import workdir as workdir_lib


class WorkdirMismatchError(ValueError):
  """The workdir holds a checkpoint this run could not continue."""


# What a checkpoint's shapes depend on.
_FIXED_RUN = ('domain', 'task', 'num_hosts')
# A replicated task's reward: another temperature is another task. (K = 1 and
# plain tasks do not use it, so there it may change.)
_FIXED_REPLICA_RUN = ('replica_temperature',)
_FIXED_CONFIG = ('algorithm', 'policy_family', 'num_components', 'policy_layer_sizes',
                 'critic_layer_sizes')
# A restored reverb table keeps its size and rate limiter. The single-process
# runner keeps the ratio itself over a MinSize table, so its table depends on
# the sizes only; the mode itself must stay too.
_FIXED_REPLAY_RUN = ('single_process',)
_FIXED_REPLAY_CONFIG = {
    True: ('replay_backend', 'max_replay_size', 'min_replay_size'),
    False: ('replay_backend', 'max_replay_size', 'min_replay_size',
            'samples_per_insert', 'rate_limiter'),
}


def _non_empty_dir(path: str) -> bool:
  return os.path.isdir(path) and bool(os.listdir(path))


def restores_replay(workdir: str, run: runs.RunOptions) -> bool:
  return run.checkpoint_replay and _non_empty_dir(
      workdir_lib.Workdir(workdir).replay)


def _jsonable(value):
  return json.loads(json.dumps(value))


def _diffs(saved: Dict[str, Any], new: Dict[str, Any],
           names: Sequence[str]) -> list:
  # A field the saved file lacks was written by an older version: unknown,
  # so it is not compared.
  return [f'{name}: saved {saved[name]!r}, now {new[name]!r}'
          for name in names
          if name in saved and _jsonable(saved[name]) != _jsonable(new[name])]


def check_resumable(workdir: str, run: runs.RunOptions,
                    config: config_lib.WPOConfig) -> None:
  """Raises WorkdirMismatchError if `workdir` holds state this run can't use."""
  paths = workdir_lib.Workdir(workdir)
  replay_too = restores_replay(workdir, run) or (
      run.checkpoint_replay and config.replay_backend == 'device' and
      _non_empty_dir(paths.checkpoints))
  if not os.path.exists(paths.config) or not (
      replay_too or _non_empty_dir(paths.checkpoints)):
    return
  saved = paths.read_config()
  new_run, new_config = run.to_dict(), config.to_dict()
  fixed_run = _FIXED_RUN + (_FIXED_REPLICA_RUN
                            if replicas.replica_count(run.task) > 1 else ())
  diffs = (_diffs(saved['run'], new_run, fixed_run) +
           _diffs(saved['config'], new_config, _FIXED_CONFIG))
  replay_diffs = []
  if replay_too:
    replay_diffs = (
        _diffs(saved['run'], new_run, _FIXED_REPLAY_RUN) +
        _diffs(saved['config'], new_config,
               _FIXED_REPLAY_CONFIG[run.single_process]))
  if diffs or replay_diffs:
    hint = (' (or --nocheckpoint_replay to start a fresh replay buffer)'
            if replay_diffs and not diffs else '')
    raise WorkdirMismatchError(
        f'workdir {workdir} holds checkpoints of a different run ('
        + '; '.join(diffs + replay_diffs) + '); use another --workdir, or the '
        f'saved values to resume it{hint}')


def write_run_config(workdir: str, run: runs.RunOptions,
                     config: config_lib.WPOConfig) -> None:
  """Writes config.json, after checking a resume would be compatible."""
  check_resumable(workdir, run, config)
  os.makedirs(workdir, exist_ok=True)
  with open(workdir_lib.Workdir(workdir).config, 'w') as f:
    json.dump({'run': run.to_dict(), 'config': config.to_dict()}, f, indent=2)
