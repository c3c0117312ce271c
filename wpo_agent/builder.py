"""Builds every part of a run from (config, run options): one place for both runners.

The single-process runner and the distributed program's nodes get their
environments, networks, replay table, writer, dataset, learner, actor loop and
evaluator from a `Builder`, and only wire them together. Each hyperparameter
is read from the config here and passed on by keyword (Acme's
agents/jax/*/builder.py, without its factory-of-factories).
"""

import functools
from typing import Any, Callable, Iterator, Optional

from acme import core
import dm_env
import jax
import reverb

from wpo_agent import acting
from wpo_agent import config as config_lib
from wpo_agent import data_sources
from wpo_agent import device_feed as feed_lib
from wpo_agent import device_replay
from wpo_agent import environments
from wpo_agent import learner as learner_lib
from wpo_agent import logs
from wpo_agent import loops
from wpo_agent import networks as networks_lib
from wpo_agent import ratio
from wpo_agent import replay
from wpo_agent import runs
from wpo_agent import seeds as seeds_lib
from wpo_agent import sharding
from wpo_agent import types
from wpo_agent import workdir as workdir_lib


class Builder:
  """Parts of one run; `run.single_process` picks the replay table's limiter."""

  def __init__(self, config: config_lib.WPOConfig, run: runs.RunOptions):
    self.config = config
    self.run = run

  # --- environment and networks ---------------------------------------------

  def environment(self, seed: int) -> dm_env.Environment:
    return environments.make_environment(
        self.run.domain, self.run.task, seed=seed,
        replica_temperature=self.run.replica_temperature)

  @functools.cached_property
  def environment_spec(self):
    return environments.environment_spec(self.environment(seed=0))

  @functools.cached_property
  def networks(self) -> networks_lib.WPONetworks:
    return networks_lib.make_networks_from_spec(
        self.environment_spec, **self.config.network_kwargs())

  # --- replay ---------------------------------------------------------------

  @property
  def rate_limiter(self) -> str:
    # One thread cannot block on itself: the single-process runner keeps the
    # ratio with `ratio_gate` over a table that only waits for min_size.
    return 'min_size' if self.run.single_process else self.config.rate_limiter

  @property
  def replay_backend(self) -> str:
    """'device' or 'reverb' (config.REPLAY_BACKENDS)."""
    return self.config.replay_backend

  @property
  def table(self) -> str:
    """The reverb table the actors write to."""
    return (replay.TRANSPORT_TABLE if self.replay_backend == 'device'
            else replay.DEFAULT_TABLE)

  def replay_table(self) -> reverb.Table:
    """The sampled table (reverb backend) or the transport queue (device)."""
    c = self.config
    if self.replay_backend == 'device':
      return replay.make_transport_table(
          self.environment_spec, name=self.table,
          max_size=feed_lib.transport_size(
              samples_per_insert=c.samples_per_insert,
              min_size=c.min_replay_size),
          rows_per_item=feed_lib.TRANSPORT_ROWS)
    return replay.make_replay_table(
        self.environment_spec, name=self.table,
        max_size=c.max_replay_size, min_size=c.min_replay_size,
        samples_per_insert=c.samples_per_insert,
        rate_limiter=self.rate_limiter)

  def replay_checkpointer(self) -> Optional[Any]:
    """Reverb's checkpointer in the workdir, or None without replay saves."""
    if not self.run.checkpoint_replay:
      return None
    return replay.make_checkpointer(self.run.workdir)

  def ratio_gate(self, *, items_in_replay: int) -> ratio.RatioGate:
    c = self.config
    return ratio.RatioGate(
        samples_per_insert=c.samples_per_insert, batch_size=c.batch_size,
        sgd_steps_per_call=c.sgd_steps_per_learner_step,
        inserted_before_min=c.min_replay_size - items_in_replay)

  def writer(self, client: reverb.Client,
             should_stop: Optional[Callable[[], bool]] = None):
    """An actor's writer for its `envs_per_actor` environments: chunks of
    device_feed.TRANSPORT_ROWS transitions into the device backend's
    transport, single transitions into the reverb backend's table. A write
    the table holds back gives way once `should_stop()` (WriterStopped)."""
    return replay.make_stream_writer(
        client, table=self.table, n_step=self.config.n_step,
        discount=self.config.discount, num_streams=self.run.envs_per_actor,
        rows_per_item=(feed_lib.TRANSPORT_ROWS
                       if self.replay_backend == 'device' else None),
        should_stop=should_stop)

  def dataset(self, server) -> Iterator[types.Batch]:
    """Reverb backend: [K, B] batches sampled from the table."""
    c = self.config
    return replay.make_dataset_iterator(
        server, table=self.table, batch_size=c.batch_size,
        num_sgd_steps=c.sgd_steps_per_learner_step, prefetch=c.prefetch_size)

  def device_feed(self, server, mesh) -> feed_lib.DeviceFeed:
    """Device backend: the buffer on `mesh` (this host's devices), fed from
    the transport table. With H hosts each holds 1/H of the replay and draws
    1/H of each batch: the sizes in the config are the whole learner's."""
    c, hosts = self.config, jax.process_count()
    buffer = device_replay.DeviceReplay(
        device_replay.transition_item(self.environment_spec),
        capacity=c.max_replay_size // hosts, batch_size=c.batch_size // hosts,
        mesh=mesh)
    chunks = replay.make_transport_iterator(
        server, table=self.table, chunk_size=buffer.chunk_size,
        rows_per_item=feed_lib.TRANSPORT_ROWS)
    # The configured limiter, not `rate_limiter` (the single-process table's):
    # the feed keeps the ratio in both runners, or none with 'min_size'.
    return feed_lib.DeviceFeed(
        buffer, chunks, samples_per_insert=c.samples_per_insert,
        keep_ratio=c.rate_limiter == 'sample_to_insert',
        sgd_steps_per_call=c.sgd_steps_per_learner_step,
        min_size=-(-c.min_replay_size // hosts))

  def data_source(self, server) -> data_sources.DataSource:
    """The learner's data from `server` (a reverb address or client) through
    the configured replay backend: the one place that picks it."""
    if self.replay_backend == 'device':
      return data_sources.FeedSource(
          self.device_feed(server, sharding.make_mesh(jax.local_devices())))
    return data_sources.IteratorSource(self.dataset(server))

  # --- learner, actors, evaluator -------------------------------------------

  def learner(self, server, logger: Optional[Any]) -> learner_lib.WPOLearner:
    """The learner, data-parallel over this host's devices (every host's,
    once `jax.distributed` has joined them), fed by `server` (a reverb
    address or client) through the configured replay backend."""
    devices = jax.devices()
    for name in ('batch_size',) + (
        ('max_replay_size',) if self.replay_backend == 'device' else ()):
      if getattr(self.config, name) % len(devices):
        raise config_lib.ConfigError(
            f'{name}={getattr(self.config, name)} must be divisible by the '
            f'{len(devices)} devices it is split over ({devices[0].platform})')
    return learner_lib.WPOLearner(
        self.networks, self.config, self.data_source(server),
        jax.random.PRNGKey(self.run.seed), mesh=sharding.make_mesh(devices),
        logger=logger)

  def actor_loop(self, source: core.VariableSource, *, actor_index: int,
                 start_actor_steps: int, writer) -> loops.ActorLoop:
    """Actor process `actor_index`'s environments and stochastic policy."""
    num = self.run.envs_per_actor
    seeds = [seeds_lib.actor_seeds(self.run, actor_index=actor_index * num + e,
                                   start_actor_steps=start_actor_steps)
             for e in range(num)]  # [(environment seed, policy seed)]
    actor = acting.VectorActor(
        self.networks.policy,
        acting.VariableClient(source, 'policy',
                              self.config.variable_update_period),
        seeds=[policy for _, policy in seeds])
    envs = [self.environment(env) for env, _ in seeds]
    return loops.ActorLoop(envs, actor, writer,
                           first_cuts=self._first_cuts(envs[0], actor_index))

  def _first_cuts(self, env, actor_index: int):
    """[E] first-episode cuts spreading the run's num_actors x E environments
    evenly over one episode (ActorLoop); none without stagger_starts."""
    if not self.run.stagger_starts:
      return None
    num = self.run.envs_per_actor
    actors = 1 if self.run.single_process else self.run.num_actors
    length = environments.episode_length(env)
    # Actor a's environment e is number e * A + a of the A * E.
    return [environments.staggered_first_episodes(
        length, index=e * actors + actor_index, count=num * actors)
            for e in range(num)]

  def evaluator(self, source: core.VariableSource, *,
                start_actor_steps: int) -> loops.Evaluator:
    """The deterministic-policy evaluator writing eval.csv."""
    env_seed, policy_seed = seeds_lib.evaluator_seeds(self.run)
    actor = acting.WPOActor(self.networks.policy,
                            acting.VariableClient(source, 'policy', 1),
                            seed=policy_seed, deterministic=True)
    last = workdir_lib.Workdir(self.run.workdir).last_eval()
    return loops.Evaluator(
        self.environment(env_seed), actor, episodes=self.run.eval_episodes,
        every=self.run.eval_every, logger=self.loggers('eval', 'actor_steps'),
        start_actor_steps=start_actor_steps,
        last_actor_steps=last[0] if last else None,
        last_return=last[1] if last else None)

  def loggers(self, name: str, step_key: str) -> logs.MultiLogger:
    """`<workdir>/<name>.csv` (+ TensorBoard)."""
    return logs.make_run_loggers(self.run.workdir, name, step_key,
                                 self.run.tensorboard)
