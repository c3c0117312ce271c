"""Checkpoints that survive kills, damage and a full disk: which one a run
resumes from, and what a failed save leaves (used by checkpointing.py; the
Reverb replay's own checkpoint: replay_checkpoint.py).

What orbax 0.11.39 guarantees on a local disk. A save writes every item of a
step (state, metadata, the device replay) into `<step>.orbax-checkpoint-tmp/`
(each item in its own `<item>.orbax-checkpoint-tmp/`, renamed when written),
and renames the step's folder to `<step>/` last (AtomicRenameTemporaryPath:
one os.rename). A folder whose name holds the tmp suffix is never taken for a
step, so a process killed at any moment leaves the steps it had and at most
one tmp folder: never a step folder with its metadata item but not its state
item. Pruning (max_to_keep) runs after that rename, so a failed save leaves
the previous checkpoint in place.

What it does not guarantee: nothing is fsynced, so a machine crash (not a
process kill) can leave a renamed folder with empty or missing files, and a
restore of such a folder raises whatever tensorstore or json raise
(ValueError 'DATA_LOSS: ...', 'OUT_OF_RANGE: ...', 'NOT_FOUND: ...',
JSONDecodeError, FileNotFoundError); the tmp folder of a killed or failed save
stays (orbax deletes it only when a later save reuses its name); a full disk
raises ValueError('RESOURCE_EXHAUSTED: ... ENOSPC ...') after orbax has logged
two tracebacks.

What this module adds:
  - `newest_loadable`: the newest step that reads back whole. Newer ones that
    do not are set aside as `<step>.damaged/` (not a step name: neither orbax
    nor a later resume takes it, and a later save of that step cannot collide
    with it), with one `warning:` line naming them and the step used. When
    none reads back: a CheckpointError naming the folder, and nothing moved.
  - `remove_unfinished`: the tmp folders of saves that never finished, removed
    by the run that owns the workdir (never by a reader: a tmp folder may be a
    save in progress).
  - `save_error`: a failed save's one-line CheckpointError ('disk full' when
    it is), raised after the save's tmp folder is removed (and by
    replay_checkpoint.save_error for Reverb's).
  - `quiet_orbax`, `drop_late_callbacks`: orbax's own error logs of a save
    or read that this module reports in one line, and the tracebacks of
    tensorstore's late callbacks after it, are not printed.
"""

import contextlib
import errno
import logging
import os
import re
import shutil
import sys
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from wpo_agent import resume

DAMAGED = '.damaged'  # suffix of a step folder set aside
_DISK_FULL = ('ENOSPC', 'No space left on device', 'EDQUOT',
              'Disk quota exceeded')
# tensorstore's errors reach us as ValueError('<STATUS_CODE>: ...').
_STATUS = re.compile(r'[A-Z][A-Z_]+: ')
_CAUSE_CHARS = 160


class CheckpointError(resume.WorkdirMismatchError):
  """A checkpoint cannot be read or written; str() is one line saying what
  to do. A WorkdirMismatchError, so that launch/run_local.py prints it as one
  `error:` line (exit code 2)."""


class Unreadable(Exception):
  """Reading a checkpoint back from disk failed (a damaged or missing file,
  or what its message names), as opposed to applying what was read."""

  def __init__(self, cause: BaseException):
    super().__init__(one_line(cause))
    self.cause = cause


def one_line(error: BaseException) -> str:
  """`error` as a short line: its type and the start of its message."""
  text = str(error).split(' [source locations=')[0]  # tensorstore's
  text = ' '.join(text.split()) or 'no message'
  line = f'{type(error).__name__}: {text}'
  return line if len(line) <= _CAUSE_CHARS else line[:_CAUSE_CHARS - 3] + '...'


def reading(read: Callable[..., Any], *args, **kwargs) -> Any:
  """read(*args, **kwargs); any failure but MemoryError raised as Unreadable."""
  try:
    with quiet_orbax():
      return read(*args, **kwargs)
  except MemoryError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    drop_late_callbacks()
    raise Unreadable(e) from e


def warn_stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def newest_loadable(steps: Iterable[int], load: Callable[[int], Any], *,
                    directory: str, set_aside: Callable[[int], str],
                    warn: Callable[[str], None] = warn_stderr
                    ) -> Optional[Tuple[int, Any]]:
  """(step, load(step)) for the newest of `steps` whose load does not raise
  Unreadable; None if there are no steps.

  Newer steps that failed are set aside (`set_aside(step)` -> where to) and
  one `warning:` line names them, why, and the step used. If every step
  fails: CheckpointError, nothing set aside.
  """
  failed: List[Tuple[int, Unreadable]] = []
  for step in sorted(steps, reverse=True):
    try:
      value = load(step)
    except Unreadable as e:
      failed.append((step, e))
      continue
    if failed:
      moved = [set_aside(s) for s, _ in failed]
      warn(fallback_line(directory, failed, step, moved))
    return step, value
  if failed:
    raise CheckpointError(_none_line(directory, failed))
  return None


def cannot_load(failed: Sequence[Tuple[int, Unreadable]],
                directory: str) -> str:
  """'cannot load checkpoint 300 in DIR (why)', of one or more steps."""
  if len(failed) == 1:
    step, why = failed[0]
    return f'cannot load checkpoint {step} in {directory} ({why})'
  steps = ', '.join(str(s) for s, _ in failed)
  whys = '; '.join(f'{s}: {e}' for s, e in failed)
  return f'cannot load checkpoints {steps} in {directory} ({whys})'


def fallback_line(directory: str, failed: Sequence[Tuple[int, Unreadable]],
                  used: int, moved: Sequence[str]) -> str:
  """The one `warning:` line of a resume that fell back to `used`."""
  return (f'warning: {cannot_load(failed, directory)}; resuming from '
          f'checkpoint {used} instead (set aside as {", ".join(moved)}: '
          'delete when no longer needed)')


def _none_line(directory, failed) -> str:
  return (f'no checkpoint can be loaded: {cannot_load(failed, directory)}; '
          f'move {directory} away (e.g. to {directory}{DAMAGED}) to start '
          'this workdir afresh, or run with another --workdir')


def set_aside(directory: str, name: str) -> str:
  """Renames `directory`/`name` to `name` + DAMAGED (replacing an older one
  of that name); returns the new path."""
  source = os.path.join(directory, name)
  target = source + DAMAGED
  shutil.rmtree(target, ignore_errors=True)
  os.rename(source, target)
  return target


def remove_unfinished(directory: str, unfinished: Callable[[str], bool]
                      ) -> List[str]:
  """Deletes the entries of `directory` whose names `unfinished` accepts (the
  tmp folders of saves that never finished); returns their names."""
  try:
    names = [n for n in os.listdir(directory) if unfinished(n)]
  except OSError:
    return []
  for name in names:
    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  return names


def is_disk_full(error: BaseException) -> bool:
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC,
                                                   errno.EDQUOT):
    return True
  return any(s in str(error) for s in _DISK_FULL)


def is_io_error(error: BaseException) -> bool:
  """An OSError, a tensorstore status error or a full disk (not a bug)."""
  return (isinstance(error, OSError) or is_disk_full(error) or
          (isinstance(error, ValueError) and bool(_STATUS.match(str(error)))))


def save_error(directory: str, what: str, error: BaseException, *,
               kept: str) -> CheckpointError:
  """The one-line error of a failed save of `what` in `directory` (its
  partial files already removed); `kept` says what is intact."""
  if is_disk_full(error):
    return CheckpointError(
        f'disk full while saving {what} in {directory} ({one_line(error)}); '
        f'{kept}: free space on that disk and run the same command again to '
        'resume')
  return CheckpointError(
      f'cannot save {what} in {directory} ({one_line(error)}); {kept}: fix '
      'the cause and run the same command again to resume')


def previous_kept(previous: Optional[int]) -> str:
  return (f'checkpoint {previous} there is intact' if previous is not None
          else 'there is no earlier checkpoint')


def _late_callback(unraisable: Any) -> bool:
  return (unraisable.exc_type is RuntimeError and
          str(unraisable.exc_value) == 'Event loop is closed')


def drop_late_callbacks() -> None:
  """Call after a read or write of a checkpoint failed. Orbax then closes
  its asyncio loop while tensorstore still reads or writes the other arrays;
  as each finishes, its callback into the closed loop raises 'Event loop is
  closed', which Python prints as a traceback on stderr (the failure itself
  is reported in one line, nothing else is lost). From then on this process's
  sys.unraisablehook drops exactly those."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_late_callbacks', False):
    return

  def hook(unraisable):
    if not _late_callback(unraisable):
      previous(unraisable)
  hook.drops_late_callbacks = True
  sys.unraisablehook = hook


class _FromOrbax(logging.Filter):
  """Drops orbax's warnings and errors (this module reports them itself)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.WARNING and
                f'{os.sep}orbax{os.sep}' in record.pathname)


@contextlib.contextmanager
def quiet_orbax():
  """Inside: orbax's absl-logged warnings and tracebacks are not printed."""
  absl_logger = logging.getLogger('absl')
  quiet = _FromOrbax()
  absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)
