"""n-step transitions of E environment streams, stepped together (numpy only).

`NStepStreams` keeps one open n-step window per episode start for each of E
streams (an actor's environments) and turns one round of steps (one step of
every stream) into the transitions that round completes, with a few numpy
operations on [E, ...] arrays instead of E Python passes. No reverb here:
nstep_writer.py sends the transitions to replay.

Per stream, episode s_0 a_0 r_0 d_0 s_1 ... s_T, the transitions are those of
dm-acme 0.4.0's NStepTransitionAdder storing the full bootstrap discount
(tests/reference/acme_adder.py is the oracle):
  after step j (j = 1..T, arriving at s_j) that is not the last: the
  transition starting at t = max(0, j - n), i.e. s_0->s_1, ..., s_0->s_n at
  the episode start (s_0 stored n times, horizons 1..n; acme's behaviour),
  then s_{j-n}->s_j; after the LAST step also s_t->s_T for every later start
  t up to T-1. Each transition is
      (s_t, a_t, R, D, s_{t+k}),  k = horizon <= n,
      R = r_t + g d_t r_{t+1} + ... + g^{k-1} d_t...d_{t+k-2} r_{t+k-1}
      D = g^k d_t ... d_{t+k-1}     (0 after termination, g^k on truncation)
computed with acme's float operations in acme's order, elementwise, so the
values are bitwise those of acme's adder and do not depend on E.
"""

from typing import NamedTuple, Optional

import numpy as np

from wpo_agent import types


class Transitions(NamedTuple):
  """One round's completed transitions and the stream each came from."""
  batch: types.Batch  # [M, ...]
  stream: np.ndarray  # [M] int


class NStepStreams:
  """E streams of n-step windows (see the module docstring for the output).

  `start(e, s_0)` opens stream e's episode (dropping an unfinished one);
  `add(...)` takes one step of EVERY stream and returns the transitions it
  completes: first one per stream that did not end, in stream order, then the
  end-of-episode tails of the streams that ended, in stream order (so with
  E = 1 the order is acme's). A stream whose episode ended must be started
  again before the next `add`.
  """

  def __init__(self, *, num_streams: int, n_step: int, discount: float,
               dtypes: types.Batch):
    """`dtypes`: a Batch of numpy dtypes (observation, action, reward,
    discount; next_observation unused) of the transitions written."""
    if n_step < 1:
      raise ValueError(f'n_step must be >= 1, got {n_step}')
    if num_streams < 1:
      raise ValueError(f'num_streams must be >= 1, got {num_streams}')
    self.num_streams = e = num_streams
    self.n_step = n = n_step
    self._dtypes = types.Batch(*(np.dtype(d) for d in dtypes))
    self._gamma = np.float32(discount)  # acme: a float32 agent discount
    # acme accumulates in the result dtype of reward, discount and float32 g.
    acc = np.result_type(self._dtypes.reward, self._dtypes.discount,
                         np.float32)
    # Open windows, one per start t (slot t % n): running R and the discount
    # without the final g (acme's total_discount).
    self._ret = np.zeros((e, n), acc)
    self._disc = np.zeros((e, n), acc)
    self._tmp = np.zeros((e, n), acc)
    self._steps = np.full((e,), -1, np.int64)  # j per stream; -1: not open
    self._rows = np.arange(e)
    self._obs: Optional[np.ndarray] = None  # [E, n + 1, O]: s_t, slot t % (n+1)
    self._act: Optional[np.ndarray] = None  # [E, n, D]: a_t, slot t % n

  def start(self, stream: int, observation) -> None:
    """Opens `stream`'s episode at s_0 = `observation`."""
    obs = np.asarray(observation)
    if self._obs is None:
      self._obs = np.zeros((self.num_streams, self.n_step + 1) + obs.shape,
                           self._dtypes.observation)
    self._obs[stream, 0] = obs
    self._steps[stream] = 0

  def drop(self, stream: Optional[int] = None) -> None:
    """Abandons the open episode of `stream` (of every stream: None)."""
    self._steps[slice(None) if stream is None else stream] = -1

  def add(self, *, actions: np.ndarray, rewards: np.ndarray,
          discounts: np.ndarray, next_observations: np.ndarray,
          last: np.ndarray) -> Transitions:
    """One step of every stream: a_j [E, D], r_j [E], d_j [E], s_{j+1} [E, O],
    and whether s_{j+1} ends the episode [E] bool."""
    if (self._steps < 0).any():
      closed = np.flatnonzero(self._steps < 0).tolist()
      raise ValueError(f'streams {closed} have no open episode: start() '
                       'must come before add()')
    n, rows, j = self.n_step, self._rows, self._steps
    if self._act is None:
      self._act = np.zeros((self.num_streams, n) + np.shape(actions)[1:],
                           self._dtypes.action)
    slot = j % n
    self._act[rows, slot] = actions
    self._obs[rows, (j + 1) % (n + 1)] = next_observations
    r = np.asarray(rewards).astype(self._dtypes.reward)[:, None]    # [E, 1]
    d = np.asarray(discounts).astype(self._dtypes.discount)[:, None]
    ret, disc, tmp = self._ret, self._disc, self._tmp
    # Every open window (start t < j): disc *= g; R += r * disc; disc *= d
    # (acme's loop body, same order). Stale slots compute garbage that is
    # overwritten when their start comes round; the new window starts at j.
    np.multiply(disc, self._gamma, out=disc)
    np.multiply(disc, r, out=tmp)
    np.add(ret, tmp, out=ret)
    np.multiply(disc, d, out=disc)
    ret[rows, slot] = r[:, 0]
    disc[rows, slot] = d[:, 0]
    j += 1  # now the number of steps taken; s_j is the newest observation

    last = np.asarray(last, bool)
    if not last.any():
      return Transitions(self._gather(rows, np.maximum(0, j - n), j), rows)
    going = np.flatnonzero(~last)
    streams = [going]
    starts = [np.maximum(0, j[going] - n)]
    for e in np.flatnonzero(last):  # the tails: every start still open
      tail = np.arange(max(0, j[e] - n), j[e])
      streams.append(np.full(len(tail), e))
      starts.append(tail)
    stream = np.concatenate(streams)
    batch = self._gather(stream, np.concatenate(starts), j[stream])
    j[last] = -1
    return Transitions(batch, stream)

  def _gather(self, stream: np.ndarray, start: np.ndarray,
              end: np.ndarray) -> types.Batch:
    """Transitions s_start -> s_end of `stream` (arrays [M])."""
    n, t = self.n_step, self._dtypes
    slot = start % n
    return types.Batch(
        observation=self._obs[stream, start % (n + 1)],
        action=self._act[stream, slot],
        reward=self._ret[stream, slot].astype(t.reward),
        discount=(self._disc[stream, slot] * self._gamma).astype(t.discount),
        next_observation=self._obs[stream, end % (n + 1)])
