"""The workdir contract: every file and folder a run keeps, named once.

  config.json   {"run": RunOptions, "config": WPOConfig} of the latest launch
  checkpoints/  learner state and counts (checkpointing.py), and the device
                replay's buffer; a checkpoint's folder is named by its step
  replay/       reverb's checkpoint of its table (replay.py)
  eval.csv, train.csv, tb/   outputs, appended to across resumes (logs.py)
  control/      the distributed program's control files (distributed/control.py)
  logs/         the distributed program's per-node logs (supervisor.py)
  videos/       python -m wpo_agent.analysis.video
  suite_run.log a run's output when the suite runner started it
                (analysis/suites.py)
  run.lock      held by every process of a live run (lifetime.py)
  host_<i>/     host i's own workdir in a run on several hosts (i >= 1)

Paths, and readers of the files a runner and the analysis tools both read;
nothing here imports another module of the package.
"""

import csv
import json
import os
from typing import Any, Dict, Optional, Tuple


class Workdir:
  """The paths of one run's workdir (absolute)."""

  def __init__(self, root: str):
    self.root = os.path.abspath(root)

  def _path(self, name: str) -> str:
    return os.path.join(self.root, name)

  def csv(self, name: str) -> str:
    """A logger's CSV file: 'eval' -> eval.csv."""
    return self._path(f'{name}.csv')

  @property
  def config(self) -> str:
    return self._path('config.json')

  @property
  def checkpoints(self) -> str:
    return self._path('checkpoints')

  @property
  def replay(self) -> str:
    return self._path('replay')

  @property
  def eval_csv(self) -> str:
    return self.csv('eval')

  @property
  def train_csv(self) -> str:
    return self.csv('train')

  @property
  def tb(self) -> str:
    return self._path('tb')

  @property
  def control(self) -> str:
    return self._path('control')

  @property
  def logs(self) -> str:
    return self._path('logs')

  @property
  def videos(self) -> str:
    return self._path('videos')

  @property
  def suite_log(self) -> str:
    return self._path('suite_run.log')

  @property
  def lock(self) -> str:
    return self._path('run.lock')

  def host(self, host_id: int) -> 'Workdir':
    """Where host `host_id` of a multi-host run writes: this one for host 0."""
    return self if host_id == 0 else Workdir(self._path(f'host_{host_id}'))

  def checkpoint_steps(self):
    """The steps of the checkpoints on disk, oldest first ([] if none)."""
    try:
      names = os.listdir(self.checkpoints)
    except OSError:
      return []
    return sorted(int(n) for n in names if n.isdigit())

  def read_config(self) -> Dict[str, Any]:
    """config.json as saved ({'run': {...}, 'config': {...}}); raises
    OSError or ValueError."""
    with open(self.config) as f:
      return json.load(f)

  def last_eval(self) -> Optional[Tuple[int, float]]:
    """(actor_steps, eval_return_mean) of eval.csv's newest usable row (a
    row cut short by a kill is skipped), or None."""
    try:
      with open(self.eval_csv, newline='') as f:
        rows = list(csv.DictReader(f))
    except OSError:
      return None
    for row in reversed(rows):
      try:
        return int(row['actor_steps']), float(row['eval_return_mean'])
      except (KeyError, TypeError, ValueError):
        continue
    return None
