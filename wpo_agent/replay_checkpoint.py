"""Reverb's checkpoint of its replay table: a damaged one is set aside before
a server loads it, so that the run starts with an empty table instead of
failing (replay.make_checkpointer, and the supervisor before a launch).

What Reverb 0.7.3 does (its TFRecordCheckpointer; the damage cases are
tests/test_checkpoint_damage_replay.py). `client.checkpoint()` writes
`<replay>/<UTC time>/` (tables.tfrecord, chunks.tfrecord), then an empty DONE
file, then deletes every other folder there: only the newest is kept. A
server built with the checkpointer loads the newest folder that has DONE, so
a save killed before DONE leaves the previous checkpoint in use, and a save
that fails (a full disk raises IndexError '... No space left on device')
leaves a folder without DONE that the next save deletes. A damaged newest
folder: a missing tables or chunks file, or an empty tables file, loads as
an EMPTY table without a word; a truncated or corrupted record, or a chunks
file that lacks chunks the table refers to, makes reverb.Server raise
RuntimeError ('truncated record at ...', 'corrupted record at ...',
'chunk_by_key does not contain key ...'). Reverb never falls back to an
older checkpoint (it keeps none).

`check` walks the newest folder's two record files (TFRecord framing and the
CRC of every record's length; no record's data is read: 0.9 s for 156k
records, a million transitions in chunks of 32) and sets a damaged folder
aside by replacing its DONE with NOT_LOADABLE (reverb then ignores it, and
deletes it at its next checkpoint). What it cannot see (a corrupted record's data, a chunks file cut exactly at a
record boundary) still makes reverb.Server raise RuntimeError: the
single-process runner then sets the folder aside with `set_aside` and starts
empty; a distributed program's replay node fails with Reverb's message.

`save` turns a failed `client.checkpoint()` (a full disk) into one line.
Pure Python (no Reverb, no TensorFlow), so that the supervisor can call it.
Disk: one checkpoint (the table's items), two while Reverb saves, plus a
set-aside one until that next save.
"""

import os
import shutil
import struct
from typing import Any, Callable, Optional, Tuple

from wpo_agent import checkpoint_recovery as recovery

_DONE = 'DONE'
_NOT_LOADABLE = 'NOT_LOADABLE'
_FILES = ('tables.tfrecord', 'chunks.tfrecord')
# PriorityTableCheckpoint (reverb/cc/checkpointing/checkpoint.proto):
# table_name = 1 (a string) is serialized first, then its items = 2.
_NAME_TAG, _ITEMS_TAG = 0x0A, 0x12


def _crc32c_table():
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C, rotated and offset."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path: str) -> Tuple[int, Optional[bytes], Optional[str]]:
  """(records, the first record's first bytes, what is wrong or None): a
  walk over the TFRecord headers of the file at `path`."""
  size = os.path.getsize(path)
  count, offset, head = 0, 0, None
  with open(path, 'rb') as f:
    while offset < size:
      f.seek(offset)
      header = f.read(12)
      if len(header) < 12:
        return count, head, f'truncated record header at byte {offset}'
      length, crc = struct.unpack('<QI', header)
      if _masked_crc32c(header[:8]) != crc:
        return count, head, f'corrupted record header at byte {offset}'
      if offset + 16 + length > size:
        return count, head, f'truncated record at byte {offset}'
      if head is None:
        head = f.read(min(length, 64))
      offset += 16 + length
      count += 1
  return count, head, None


def _has_items(table_record: bytes) -> bool:
  """Whether a table's checkpoint record holds items (those need chunks)."""
  if not table_record or table_record[0] != _NAME_TAG:
    return True  # unknown layout: assume items, so an empty chunks file fails
  length, shift, i = 0, 0, 1
  while i < len(table_record):
    byte = table_record[i]
    length |= (byte & 0x7F) << shift
    shift, i = shift + 7, i + 1
    if not byte & 0x80:
      break
  end = i + length
  return end >= len(table_record) or table_record[end] == _ITEMS_TAG


def problem(folder: str) -> Optional[str]:
  """What makes the replay checkpoint in `folder` unloadable, or None."""
  found = {}
  for name in _FILES:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      return f'{name} is missing'
    count, head, wrong = _records(path)
    if wrong:
      return f'{name}: {wrong}'
    found[name] = count, head
  tables, table_head = found['tables.tfrecord']
  if not tables:
    return 'tables.tfrecord holds no table'
  if not found['chunks.tfrecord'][0] and _has_items(table_head):
    return 'chunks.tfrecord holds no data for the items of its table'
  return None


def newest(replay_dir: str) -> Optional[str]:
  """The folder a Reverb server would load (newest name with DONE), or None."""
  try:
    names = sorted(os.listdir(replay_dir), reverse=True)
  except OSError:
    return None
  for name in names:
    if os.path.isfile(os.path.join(replay_dir, name, _DONE)):
      return os.path.join(replay_dir, name)
  return None


def set_aside(folder: str, why: str) -> str:
  """Makes Reverb skip the checkpoint in `folder` (its DONE becomes
  NOT_LOADABLE, holding `why`); the `warning:` line that says so."""
  with open(os.path.join(folder, _NOT_LOADABLE), 'w') as f:
    f.write(why + '\n')
  os.remove(os.path.join(folder, _DONE))
  return (f'warning: Reverb\'s replay checkpoint {folder} cannot be loaded '
          f'({why}); the replay starts empty and refills to min_replay_size '
          'before learning resumes (Reverb deletes that folder at its next '
          'checkpoint)')


def remove_unfinished(replay_dir: str) -> None:
  """Deletes the folders of replay saves that never wrote DONE (a kill, a
  full disk): Reverb would only delete them at its next checkpoint."""
  try:
    names = os.listdir(replay_dir)
  except OSError:
    return
  for name in names:
    folder = os.path.join(replay_dir, name)
    if (os.path.isdir(folder) and
        not os.path.exists(os.path.join(folder, _DONE)) and
        not os.path.exists(os.path.join(folder, _NOT_LOADABLE))):
      shutil.rmtree(folder, ignore_errors=True)


def check(replay_dir: str, *, warn=None) -> Optional[str]:
  """Before a Reverb server loads `replay_dir`: removes unfinished saves and
  sets a damaged newest checkpoint aside; returns the `warning:` line (also
  passed to `warn`, default: printed on stderr), or None if all is well.

  Only the run that owns the workdir may call it (lifetime.claimed): a save
  in progress has no DONE yet.
  """
  remove_unfinished(replay_dir)
  folder = newest(replay_dir)
  why = problem(folder) if folder else None
  if why is None:
    return None
  line = set_aside(folder, why)
  (warn or recovery.warn_stderr)(line)
  return line


def save(checkpoint: Callable[[], Any], replay_dir: str) -> None:
  """Runs `checkpoint` (a Reverb client's, saving into `replay_dir`); if the
  disk fails it, removes its unfinished folder and raises a one-line
  CheckpointError ('disk full' when it is; Reverb's previous checkpoint is
  intact)."""
  try:
    checkpoint()
  except Exception as e:  # pylint: disable=broad-except
    remove_unfinished(replay_dir)
    if recovery.is_io_error(e):
      raise recovery.save_error(
          replay_dir, 'Reverb\'s replay checkpoint', e,
          kept='its previous checkpoint there is intact') from e
    raise
