"""ratio.RatioGate: learner calls paid for by inserts (hand-computed values)."""

import pytest

from wpo_agent import ratio


def _owed_after(gate, inserts):
  gate.insert(inserts)
  return gate.owed()


def test_one_call_per_insert_after_warmup():
  # spi 32, batch 32, K 1: one call per insert once 100 inserts filled the table.
  gate = ratio.RatioGate(samples_per_insert=32.0, batch_size=32,
                         sgd_steps_per_call=1, inserted_before_min=100)
  assert _owed_after(gate, 100) == 0
  assert _owed_after(gate, 1) == 1
  gate.called()
  assert gate.owed() == 0 and gate.calls == 1
  assert _owed_after(gate, 5) == 5


def test_fractional_ratio_and_fused_steps():
  # spi 3, batch 4, K 2: a call samples 8, an insert pays 3: floor(3 n / 8).
  gate = ratio.RatioGate(samples_per_insert=3.0, batch_size=4,
                         sgd_steps_per_call=2, inserted_before_min=0)
  expected = [3 * n // 8 for n in range(1, 20)]
  got = []
  for _ in range(19):
    gate.insert()
    while gate.owed():
      gate.called()
    got.append(gate.calls)
  assert got == expected


def test_restored_replay_needs_no_warmup():
  # The table already holds more than min_size: a negative warm-up counts as 0.
  gate = ratio.RatioGate(samples_per_insert=64.0, batch_size=256,
                         sgd_steps_per_call=1, inserted_before_min=-500)
  assert _owed_after(gate, 3) == 0  # 3 x 64 / 256 = 0.75
  assert _owed_after(gate, 1) == 1


def test_bad_ratio_and_error_buffer():
  with pytest.raises(ValueError, match='samples_per_insert'):
    ratio.RatioGate(samples_per_insert=0.0, batch_size=1,
                    sgd_steps_per_call=1, inserted_before_min=0)
  # max(0.1 x 64 x 1000, 2 x 64) and max(0.1 x 0.5 x 2, 2 x 1).
  assert ratio.default_error_buffer(samples_per_insert=64.0,
                                    min_size=1000) == 6400.0
  assert ratio.default_error_buffer(samples_per_insert=0.5, min_size=2) == 2.0
