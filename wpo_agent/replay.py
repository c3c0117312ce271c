"""Reverb replay for WPO: table, n-step adder, and the learner's batch iterator.

This (and the launch layer) are the only modules that import reverb/TensorFlow.

Stored item (one per transition, acme `types.Transition` signature):
  (s_t, a_t, R, D, s_{t+n}) with, for an effective horizon k <= n,
      R = r_t + g d_t r_{t+1} + ... + g^{k-1} d_t...d_{t+k-2} r_{t+k-1}
      D = g^k d_t ... d_{t+k-1}
  where g is the agent discount and d the environment discounts (0 on
  termination, 1 on the suite's time-limit truncation). The learner's target is
  R + D V(s_{t+n}).

NOTE: dm-acme 0.4.0's NStepTransitionAdder stores D with ONE FEWER factor of g
(g^{k-1} d_t...d_{t+k-1}); acme learners multiply by g again. We store the full
bootstrap discount instead (`BootstrapNStepTransitionAdder`), so a `Batch` is
self-contained and short transitions (episode starts/ends, k < n) are correct
without the learner knowing k. acme also writes, at each episode start, the
transitions s_0->s_1, ..., s_0->s_n (s_0 is stored n times with horizons 1..n)
and at the end s_{T-k}->s_T for k = n-1..1.

make_adder returns, by default, `nstep_writer.NStepTransitionWriter`: the same
items (bitwise-equal R and D) written as flat reverb steps, several times
cheaper per step than the acme-based adder (implementation='acme').
"""

import os
from typing import Iterator, Optional, Union

from acme import specs
from acme import types as acme_types
from acme.adders import reverb as acme_reverb
from acme.datasets import reverb as acme_datasets
import reverb
from reverb.platform.default import checkpointers
import tensorflow as tf
import tree

from wpo_agent import nstep_writer
from wpo_agent import types

DEFAULT_TABLE = acme_reverb.DEFAULT_PRIORITY_TABLE  # 'priority_table'
RATE_LIMITERS = ('sample_to_insert', 'min_size')
REPLAY_CHECKPOINT_DIR = 'replay'  # under the run's workdir


def default_error_buffer(samples_per_insert: float, min_size: int) -> float:
  """max(0.1 * spi * min_size, 2 * max(1, spi)) (reference Sec. 5).

  reverb requires a total band width >= 2 * max(1, spi), hence the max(1, .).
  """
  return float(max(0.1 * samples_per_insert * min_size,
                   2.0 * max(1.0, samples_per_insert)))


def make_rate_limiter(rate_limiter: str, *, min_size: int,
                      samples_per_insert: Optional[float] = None,
                      error_buffer: Optional[float] = None
                     ) -> reverb.rate_limiters.RateLimiter:
  """'sample_to_insert' (holds a ratio) or 'min_size' (blocks below min_size).

  The ratio limiter gets error_buffer as a single float: reverb then centres the
  allowed band on spi * min_size, the insert-minus-sample 'error' at the moment
  stage 1 (filling to min_size, no samples) ends. A (min, max) tuple would be
  used WITHOUT that offset, so we never pass the tuple form.
  """
  if rate_limiter == 'min_size':
    return reverb.rate_limiters.MinSize(min_size)
  if rate_limiter != 'sample_to_insert':
    raise ValueError(f'rate_limiter={rate_limiter!r}; allowed: '
                     f'{list(RATE_LIMITERS)}')
  if samples_per_insert is None or samples_per_insert <= 0:
    raise ValueError('rate_limiter="sample_to_insert" needs samples_per_insert '
                     f'> 0, got {samples_per_insert}')
  if error_buffer is None:
    error_buffer = default_error_buffer(samples_per_insert, min_size)
  return reverb.rate_limiters.SampleToInsertRatio(
      samples_per_insert=float(samples_per_insert),
      min_size_to_sample=int(min_size),
      error_buffer=float(error_buffer))


def make_replay_table(environment_spec: specs.EnvironmentSpec,
                      *,
                      name: str = DEFAULT_TABLE,
                      max_size: int = 1_000_000,
                      min_size: int = 1000,
                      samples_per_insert: Optional[float] = 64.0,
                      error_buffer: Optional[float] = None,
                      rate_limiter: str = 'sample_to_insert') -> reverb.Table:
  """Uniform-sampling, FIFO-removing transition table (the adder's signature).

  Args:
    environment_spec: spec of the (wrapped) environment that feeds the adder.
    name: table name; pass the same to make_adder and make_dataset_iterator.
    max_size: capacity in transitions.
    min_size: no sampling below this many items.
    samples_per_insert: target ratio for 'sample_to_insert' (counted per
      sampled item, so one SGD step of batch B uses B samples).
    error_buffer: ratio slack; default `default_error_buffer`.
    rate_limiter: 'sample_to_insert' or 'min_size' (no ratio; tests/debug).
  """
  if not 1 <= min_size <= max_size:
    raise ValueError(f'need 1 <= min_size <= max_size; got min_size={min_size}'
                     f', max_size={max_size}')
  limiter = make_rate_limiter(rate_limiter, min_size=min_size,
                              samples_per_insert=samples_per_insert,
                              error_buffer=error_buffer)
  return reverb.Table(
      name=name,
      sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=int(max_size),
      rate_limiter=limiter,
      signature=acme_reverb.NStepTransitionAdder.signature(environment_spec))


class BootstrapNStepTransitionAdder(acme_reverb.NStepTransitionAdder):
  """acme's n-step transition adder, storing the full bootstrap discount.

  Identical to dm-acme 0.4.0's NStepTransitionAdder except that the stored
  discount is g^k d_t...d_{t+k-1} instead of acme's g^(k-1) d_t...d_{t+k-1}
  (see the module docstring).
  """

  def _compute_cumulative_quantities(self, rewards, discounts):
    n_step_return, total_discount = super()._compute_cumulative_quantities(
        rewards, discounts)
    # self._discount is a float32 scalar, so dtypes (float32) are unchanged.
    gamma = self._discount
    return n_step_return, tree.map_structure(lambda d: d * gamma,
                                             total_discount)


ADDER_IMPLEMENTATIONS = ('fast', 'acme')


def make_adder(client: reverb.Client,
               n_step: int,
               discount: float,
               table: str = DEFAULT_TABLE,
               implementation: str = 'fast'
              ) -> Union[nstep_writer.NStepTransitionWriter,
                         BootstrapNStepTransitionAdder]:
  """n-step transition adder writing into `table` (see module docstring).

  implementation: 'fast' (default): wpo_agent.nstep_writer.
  NStepTransitionWriter, the same items at a fraction of the cost (flat array
  observations, no extras); 'acme': BootstrapNStepTransitionAdder (acme's
  adder, any nesting). Both write the same multiset of items per episode.
  """
  if n_step < 1:
    raise ValueError(f'n_step must be >= 1, got {n_step}')
  if implementation == 'fast':
    return nstep_writer.NStepTransitionWriter(
        client, n_step=n_step, discount=discount, table=table)
  if implementation != 'acme':
    raise ValueError(f'implementation={implementation!r}; allowed: '
                     f'{list(ADDER_IMPLEMENTATIONS)}')
  return BootstrapNStepTransitionAdder(
      client=client, n_step=n_step, discount=discount,
      priority_fns={table: None})


def _to_batch(sample: reverb.ReplaySample) -> types.Batch:
  t: acme_types.Transition = sample.data
  return types.Batch(observation=t.observation, action=t.action,
                     reward=t.reward, discount=t.discount,
                     next_observation=t.next_observation)


def make_dataset(server_address: str,
                 table: str = DEFAULT_TABLE,
                 batch_size: int = 256,
                 num_sgd_steps: int = 1,
                 prefetch: Optional[int] = 4,
                 num_parallel_calls: int = 12,
                 max_in_flight_samples_per_worker: Optional[int] = None
                ) -> tf.data.Dataset:
  """tf.data.Dataset of Batch: [B, ...], or [K, B, ...] for num_sgd_steps K > 1.

  Built on acme.datasets.make_reverb_dataset (num_parallel_calls interleaved
  reverb TrajectoryDatasets, each batching B). Every sampled item counts
  against the rate limiter, including those prefetched but not yet consumed.
  """
  if batch_size < 1 or num_sgd_steps < 1:
    raise ValueError(f'need batch_size >= 1 and num_sgd_steps >= 1; got '
                     f'{batch_size}, {num_sgd_steps}')
  dataset = acme_datasets.make_reverb_dataset(
      server_address=server_address,
      table=table,
      batch_size=batch_size,
      num_parallel_calls=num_parallel_calls,
      max_in_flight_samples_per_worker=max_in_flight_samples_per_worker)
  dataset = dataset.map(_to_batch, num_parallel_calls=tf.data.AUTOTUNE)
  if num_sgd_steps > 1:
    dataset = dataset.batch(num_sgd_steps, drop_remainder=True)
  if prefetch:
    dataset = dataset.prefetch(prefetch)
  return dataset


def make_dataset_iterator(server_address: Union[str, reverb.Client],
                          table: str = DEFAULT_TABLE,
                          batch_size: int = 256,
                          num_sgd_steps: int = 1,
                          prefetch: Optional[int] = 4,
                          num_parallel_calls: int = 12,
                          max_in_flight_samples_per_worker: Optional[int] = None
                         ) -> Iterator[types.Batch]:
  """Python iterator of numpy `types.Batch` ([B, ...] or [K, B, ...]).

  `server_address` may also be a reverb.Client (e.g. a launchpad ReverbNode
  handle); its server_address is used.
  """
  if isinstance(server_address, reverb.Client):
    server_address = server_address.server_address
  dataset = make_dataset(server_address, table, batch_size, num_sgd_steps,
                         prefetch, num_parallel_calls,
                         max_in_flight_samples_per_worker)
  return dataset.as_numpy_iterator()


def make_checkpointer(workdir: str) -> checkpointers.DefaultCheckpointer:
  """Reverb checkpointer in `workdir`/replay.

  A server built with it loads the newest checkpoint there on start;
  `client.checkpoint()` writes a new one, and reverb keeps only the newest.
  """
  return checkpointers.DefaultCheckpointer(
      os.path.join(os.path.abspath(workdir), REPLAY_CHECKPOINT_DIR))


def num_items(client: reverb.Client, table: str = DEFAULT_TABLE) -> int:
  """Current number of items in `table`."""
  return int(client.server_info()[table].current_size)

