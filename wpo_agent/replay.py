"""Reverb replay for WPO: table, n-step writer, and the learner's dataset.

Reverb and TensorFlow stay at the edges: besides this module only the
writers (nstep_writer), the wiring (builder, single_process) and TensorBoard
logging (logs, lazily) import them; the maths never does.

One item per n-step transition, stored as a `types.Batch` of single arrays
(the table signature is `transition_signature`): for an effective horizon
k <= n,
    R = r_t + g d_t r_{t+1} + ... + g^{k-1} d_t...d_{t+k-2} r_{t+k-1}
    D = g^k d_t ... d_{t+k-1}
where g is the agent discount and d the environment discounts (0 on
termination, 1 on the suite's time-limit truncation). The learner's target is
R + D V(s_{t+k}) (docs/algorithm.md Sec. 5).

dm-acme 0.4.0's NStepTransitionAdder stores D with ONE FEWER factor of g and
its learners multiply by g again; we store the full bootstrap discount, so a
Batch is self-contained. The items are otherwise acme's (tests/
test_nstep_writer.py compares them bit for bit with acme's adder, the oracle in
tests/reference/acme_adder.py).
"""

from typing import Callable, Iterator, Optional, Union

from acme import specs
import reverb
from reverb.platform.default import checkpointers
import tensorflow as tf

from wpo_agent import device_replay
from wpo_agent import nstep_writer
from wpo_agent import ratio
from wpo_agent import replay_checkpoint
from wpo_agent import types
from wpo_agent import workdir as workdir_lib

# The table's name; replay checkpoints written by earlier versions use it too.
DEFAULT_TABLE = 'priority_table'
# The device backend's FIFO queue from the actors to the learner's buffer.
TRANSPORT_TABLE = 'transport'
# Parallel reverb streams draining the transport (each holds <= 2 chunks).
_TRANSPORT_STREAMS = 2
# Parallel reverb sample streams behind one dataset (acme's default is 12).
_DATASET_PARALLEL_CALLS = 12


def transition_signature(environment_spec: specs.EnvironmentSpec,
                         rows: Optional[int] = None) -> types.Batch:
  """The table signature: a Batch of one transition's TensorSpecs, or of
  `rows` transitions' ([rows, ...], the device backend's transport items)."""
  lead = (rows,) if rows else ()

  def spec(array_spec, name):
    return tf.TensorSpec(lead + tuple(array_spec.shape),
                         tf.as_dtype(array_spec.dtype), name)
  return types.Batch(
      observation=spec(environment_spec.observations, 'observation'),
      action=spec(environment_spec.actions, 'action'),
      reward=spec(environment_spec.rewards, 'reward'),
      discount=spec(environment_spec.discounts, 'discount'),
      next_observation=spec(environment_spec.observations, 'next_observation'))


def make_rate_limiter(*, rate_limiter: str, min_size: int,
                      samples_per_insert: float
                     ) -> reverb.rate_limiters.RateLimiter:
  """'sample_to_insert' (holds the ratio) or 'min_size' (no ratio).

  The ratio limiter gets its error buffer as a single float: reverb then
  centres the allowed band on spi * min_size, the insert-minus-sample 'error'
  at the moment filling to min_size ends. A (min, max) tuple would be used
  WITHOUT that offset, so we never pass the tuple form.
  """
  if rate_limiter == 'min_size':
    return reverb.rate_limiters.MinSize(min_size)
  if rate_limiter != 'sample_to_insert':
    raise ValueError(f'rate_limiter={rate_limiter!r}; allowed: '
                     f'{list(ratio.RATE_LIMITERS)}')
  if not samples_per_insert or samples_per_insert <= 0:
    raise ValueError('rate_limiter="sample_to_insert" needs samples_per_insert '
                     f'> 0, got {samples_per_insert}')
  return reverb.rate_limiters.SampleToInsertRatio(
      samples_per_insert=float(samples_per_insert),
      min_size_to_sample=int(min_size),
      error_buffer=ratio.default_error_buffer(
          samples_per_insert=samples_per_insert, min_size=min_size))


def make_replay_table(environment_spec: specs.EnvironmentSpec, *,
                      name: str, max_size: int, min_size: int,
                      samples_per_insert: float,
                      rate_limiter: str) -> reverb.Table:
  """Uniform-sampling, FIFO-removing table of transitions.

  Args:
    environment_spec: spec of the (wrapped) environment that feeds the writer.
    name: table name; pass the same to make_stream_writer and
      make_dataset_iterator.
    max_size: capacity in transitions.
    min_size: no sampling below this many items.
    samples_per_insert: target ratio for 'sample_to_insert' (counted per
      sampled item, so one SGD step of batch B uses B samples).
    rate_limiter: one of ratio.RATE_LIMITERS.
  """
  if not 1 <= min_size <= max_size:
    raise ValueError(f'need 1 <= min_size <= max_size; got min_size={min_size}'
                     f', max_size={max_size}')
  return reverb.Table(
      name=name,
      sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=int(max_size),
      rate_limiter=make_rate_limiter(rate_limiter=rate_limiter,
                                     min_size=min_size,
                                     samples_per_insert=samples_per_insert),
      signature=transition_signature(environment_spec))


def make_transport_table(environment_spec: specs.EnvironmentSpec, *,
                         name: str, max_size: int,
                         rows_per_item: int) -> reverb.Table:
  """Device backend: a bounded FIFO queue of chunks of `rows_per_item`
  transitions; each item is read once, by the learner's drain, and a full
  queue blocks the actors' writes."""
  return reverb.Table.queue(
      name=name, max_size=int(max_size),
      signature=transition_signature(environment_spec, rows_per_item))


def sample_streams(server_address: str, *, table: str, batch_size: int,
                   num_streams: int,
                   max_in_flight_samples_per_worker: int) -> tf.data.Dataset:
  """Batches of `batch_size` items from `num_streams` reverb sample streams
  interleaved (no order between streams): the pipeline of
  acme.datasets.make_reverb_dataset, built without autograph.

  Why not acme's: tf.data converts the stream function it is given with
  autograph, and converting acme's closure takes reverb's dataset code with
  it, 3.4 s of CPU at every learner start (BUILD_NOTES.md, "Test time"). The
  function holds no Python control flow on tensors, so conversion changes
  nothing but the cost.
  """

  @tf.autograph.experimental.do_not_convert
  def stream(unused_index):
    return reverb.TrajectoryDataset.from_table_signature(
        server_address=server_address, table=table,
        max_in_flight_samples_per_worker=max_in_flight_samples_per_worker
    ).batch(batch_size, drop_remainder=True)

  return tf.data.Dataset.range(num_streams).interleave(
      map_func=stream, cycle_length=num_streams, num_parallel_calls=num_streams,
      deterministic=False)


def make_transport_iterator(server: Union[str, reverb.Client], *, table: str,
                            chunk_size: int,
                            rows_per_item: int) -> Iterator[types.Batch]:
  """Numpy Batches of `chunk_size` transitions [C, ...] drained from
  `table`, whose items hold `rows_per_item` transitions each."""
  if isinstance(server, reverb.Client):
    server = server.server_address
  items = max(1, chunk_size // rows_per_item)
  dataset = sample_streams(server, table=table, batch_size=items,
                           num_streams=_TRANSPORT_STREAMS,
                           max_in_flight_samples_per_worker=items)
  return device_replay.rechunk(dataset.map(_to_batch).as_numpy_iterator(),
                              chunk_size)


def make_stream_writer(client: reverb.Client, *, table: str, n_step: int,
                       discount: float, num_streams: int,
                       rows_per_item: Optional[int],
                       should_stop: Optional[Callable[[], bool]] = None):
  """An actor's writer for its `num_streams` environments: one item per
  transition (rows_per_item None: the reverb backend's sampled table) or
  per `rows_per_item` transitions (the device backend's transport). A write
  blocked by the table raises nstep_writer.WriterStopped once `should_stop()`
  (None: it blocks until the table takes it)."""
  if rows_per_item:
    return nstep_writer.ChunkWriter(
        client, num_streams=num_streams, n_step=n_step, discount=discount,
        table=table, rows_per_item=rows_per_item, should_stop=should_stop)
  return nstep_writer.TransitionWriter(
      client, num_streams=num_streams, n_step=n_step, discount=discount,
      table=table, should_stop=should_stop)


@tf.autograph.experimental.do_not_convert
def _to_batch(sample: reverb.ReplaySample) -> types.Batch:
  # The signature comes back as a namedtuple of the same field names (in tables
  # restored from older checkpoints, acme's Transition with empty extras).
  return types.Batch(*(getattr(sample.data, f) for f in types.Batch._fields))


def make_dataset(server_address: str, *, table: str, batch_size: int,
                 num_sgd_steps: int, prefetch: int) -> tf.data.Dataset:
  """tf.data.Dataset of Batch [K, B, ...] (K = num_sgd_steps).

  Parallel reverb sample streams, each batching B (`sample_streams`: acme's
  make_reverb_dataset with its default in-flight count, 2B). Every sampled
  item counts against the rate limiter, including those prefetched but not
  yet consumed.
  """
  if batch_size < 1 or num_sgd_steps < 1:
    raise ValueError(f'need batch_size >= 1 and num_sgd_steps >= 1; got '
                     f'{batch_size}, {num_sgd_steps}')
  dataset = sample_streams(server_address, table=table, batch_size=batch_size,
                           num_streams=_DATASET_PARALLEL_CALLS,
                           max_in_flight_samples_per_worker=2 * batch_size)
  dataset = dataset.map(_to_batch, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(num_sgd_steps, drop_remainder=True)
  if prefetch:
    dataset = dataset.prefetch(prefetch)
  return dataset


def make_dataset_iterator(server: Union[str, reverb.Client], *, table: str,
                          batch_size: int, num_sgd_steps: int,
                          prefetch: int) -> Iterator[types.Batch]:
  """Python iterator of numpy Batches [K, B, ...].

  `server` is an address or a reverb.Client (e.g. a launchpad ReverbNode
  handle).
  """
  if isinstance(server, reverb.Client):
    server = server.server_address
  return make_dataset(server, table=table, batch_size=batch_size,
                      num_sgd_steps=num_sgd_steps,
                      prefetch=prefetch).as_numpy_iterator()


def make_checkpointer(workdir: str, *,
                      check: bool = True) -> checkpointers.DefaultCheckpointer:
  """Reverb checkpointer in `workdir`/replay.

  A server built with it loads the newest checkpoint there on start;
  `client.checkpoint()` writes a new one, and reverb keeps only the newest.
  First (unless `check` is False: the distributed supervisor has done it
  before launch), unfinished saves are removed and a damaged newest
  checkpoint is set aside with one `warning:` line on stderr, so that the
  server starts empty instead of failing (replay_checkpoint.check: what
  Reverb does with one).
  """
  replay_dir = workdir_lib.Workdir(workdir).replay
  if check:
    replay_checkpoint.check(replay_dir)
  return checkpointers.DefaultCheckpointer(replay_dir)


def num_items(client: reverb.Client, table: str) -> int:
  """Current number of items in `table`."""
  return int(client.server_info()[table].current_size)
