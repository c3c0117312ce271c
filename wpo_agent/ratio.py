"""The samples-per-insert contract between actors and the learner.

Every run keeps the learner's sampling in step with the actors' inserts: after
`min_size` items are in the table, the learner may sample `samples_per_insert`
transitions per inserted transition, give or take an error buffer. Who keeps
it depends on the replay backend and the runner:
  - reverb backend, distributed program: reverb's SampleToInsertRatio limiter
    on the table (`replay.make_rate_limiter`);
  - reverb backend, single process, which cannot block one thread on itself:
    `RatioGate` over a MinSize table (single_process.py);
  - device backend (the default), both runners: `RatioGate` inside the
    learner's feed, over the items drained from the transport queue
    (`device_feed.DeviceFeed`).
No reverb import here.
"""

RATE_LIMITERS = ('sample_to_insert', 'min_size')


def default_error_buffer(*, samples_per_insert: float, min_size: int) -> float:
  """max(0.1 * spi * min_size, 2 * max(1, spi)), as Acme's agents choose it.

  reverb requires a total band width >= 2 * max(1, spi), hence the max(1, .).
  """
  return float(max(0.1 * samples_per_insert * min_size,
                   2.0 * max(1.0, samples_per_insert)))


class RatioGate:
  """How many learner calls the inserts so far have paid for.

  One learner call samples `batch_size * sgd_steps_per_call` transitions, so
  after the table has held `min_size` items, `ready` more inserts pay for
  floor(ready * samples_per_insert / (batch_size * sgd_steps_per_call)) calls.
  `inserted_before_min` is how many inserts fill the table to `min_size`
  (0 when a restored table already holds that many).
  """

  def __init__(self, *, samples_per_insert: float, batch_size: int,
               sgd_steps_per_call: int, inserted_before_min: int):
    if samples_per_insert <= 0:
      raise ValueError(f'samples_per_insert must be > 0, got '
                       f'{samples_per_insert}')
    self._samples_per_insert = samples_per_insert
    self._samples_per_call = batch_size * sgd_steps_per_call
    self._warmup = max(0, int(inserted_before_min))
    self._inserts = 0
    self._calls = 0

  @property
  def calls(self) -> int:
    """Learner calls made through this gate."""
    return self._calls

  def insert(self, count: int = 1) -> None:
    self._inserts += count

  def owed(self) -> int:
    """Learner calls allowed now and not yet made."""
    ready = self._inserts - self._warmup
    if ready < 0:
      return 0
    paid = int(ready * self._samples_per_insert / self._samples_per_call)
    return max(0, paid - self._calls)

  def called(self) -> None:
    self._calls += 1

  def realised(self) -> float:
    """Sampled per inserted transition since `min_size` (0 before any)."""
    ready = self._inserts - self._warmup
    return self._calls * self._samples_per_call / ready if ready > 0 else 0.0
