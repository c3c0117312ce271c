"""logs.py: the progress line's rates over its sliding window, and the
append-only CSV."""

import csv

from wpo_agent import logs


def _field(line, name):
  part = [p for p in line.split(' | ') if p.startswith(name)][0]
  return float(part.split()[1])


def test_progress_rates_use_a_sliding_window(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(logs.time, 'time', lambda: clock[0])
  progress = logs.Progress(max_actor_steps=10_000, batch_size=200, window_s=30)
  # Actors report in blocks: +200 steps, then +0, alternating every 5 s, while
  # the learner does 2 SGD steps per 5 s.
  lines, actor, learner = [], 0, 0
  for i in range(13):
    lines.append(progress.line(actor, learner, actor, None))
    clock[0] += 5.0
    actor += 200 if i % 2 == 0 else 0
    learner += 2
  # First line: no history, so no rates.
  assert _field(lines[0], 'samples/insert') == 0.0
  # Once the window (30 s = 6 intervals) is full, it spans 3 blocks of 200
  # inserts and 12 SGD steps: 12 * 200 / 600 = 4.0, steady from line to line
  # although each 5-s interval alone alternates between 2.0 and no inserts.
  for line in lines[7:]:
    assert _field(line, "samples/insert") == 4.0, line
    assert _field(line, 'env') == 20.0  # 600 steps / 30 s
    assert abs(_field(line, 'learner') - 0.4) < 1e-9  # 12 / 30 s


def test_csv_logger_appends_and_keeps_header(tmp_path):
  path = str(tmp_path / 'eval.csv')
  logs.CSVLogger(path).write({'a': 1, 'b': 2})
  logs.CSVLogger(path).write({'b': 4, 'a': 3, 'c': 9})  # resumed run
  with open(path) as f:
    rows = list(csv.DictReader(f))
  assert rows == [{'a': '1', 'b': '2'}, {'a': '3', 'b': '4'}]
