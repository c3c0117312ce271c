"""The bodies of the distributed program's nodes (no Launchpad import here).

Each node receives the run `spec` (a JSON-able dict: run options + config) and
handles to the nodes it talks to: a reverb.Client for replay, courier clients
for the learner (get_variables) and the counter (increment / get_counts).
Every node reports its state through `control.Control` and polls its STOP file.
"""

import os
import threading
import time
from typing import Any, Dict

from acme.utils import counting
import jax
import numpy as np

from wpo_agent import acting
from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import environments
from wpo_agent import learner as learner_lib
from wpo_agent import logs
from wpo_agent import replay
from wpo_agent import single_process
from wpo_agent.distributed import control as control_lib

Spec = Dict[str, Any]
_COUNT_EVERY = 100  # actor steps between counter increments / STOP checks
# Fault injection for the lifetime tests: WPO_FAULT_INJECT=actor_1@200 makes
# actor 1 raise after 200 of its steps.
_FAULT_ENV = 'WPO_FAULT_INJECT'


def _fault_step(name: str):
  spec = os.environ.get(_FAULT_ENV, '')
  node, _, steps = spec.partition('@')
  return int(steps or 0) if node == name else None


def _config(spec: Spec) -> config_lib.WPOConfig:
  return config_lib.WPOConfig(**spec['config'])


def _environment(spec: Spec, seed: int):
  return environments.make_environment(spec['domain'], spec['task'], seed=seed)


def _derived_seed(*entropy: int) -> int:
  return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0] % 2**31)


def _elapsed(spec: Spec) -> float:
  """Run wall time, continued across resumes."""
  return spec.get('start_elapsed_s', 0.0) + time.time() - spec['launch_time']


def make_replay_tables(spec: Spec):
  """Replay node: the ratio-limited table (samples_per_insert, error buffer)."""
  config = _config(spec)
  env_spec = environments.environment_spec(_environment(spec, 0))
  return [replay.make_replay_table(
      env_spec, max_size=config.max_replay_size,
      min_size=config.min_replay_size,
      samples_per_insert=config.samples_per_insert,
      rate_limiter=config.rate_limiter)]


def make_counter(initial_counts: Dict[str, float]) -> counting.Counter:
  """Counter node, seeded with the counts of the checkpoint being resumed."""
  counter = counting.Counter()
  if initial_counts:
    counter.increment(**initial_counts)
  return counter


class LearnerNode:
  """Courier node: serves get_variables to actors and runs the SGD loop.

  On STOP a watcher thread checkpoints the last completed step and ends the
  process; the SGD thread may be blocked on the replay rate limiter by then
  (actors stopped inserting), so it cannot be relied upon to notice.
  """

  def __init__(self, replay_client, counter, spec: Spec):
    self._spec = spec
    self._replay_client = replay_client
    self._config = config = _config(spec)
    self._counter = counter
    self._control = control_lib.Control(spec['workdir'])
    env_spec = environments.environment_spec(_environment(spec, 0))
    networks = single_process.make_networks(env_spec, config)
    iterator = replay.make_dataset_iterator(
        replay_client, batch_size=config.batch_size,
        num_sgd_steps=config.sgd_steps_per_learner_step,
        prefetch=config.prefetch_size)
    logger = logs.make_run_loggers(spec['workdir'], 'train', 'learner_steps',
                                   spec.get('tensorboard', True))
    self._learner = learner_lib.WPOLearner(
        networks, config, iterator, jax.random.PRNGKey(spec['seed']),
        logger=logger)
    self._checkpointer = checkpointing.Checkpointer(spec['workdir'])
    restored = self._checkpointer.restore(self._learner.save())
    if restored is not None:
      self._learner.restore(restored[0])

  def get_variables(self, names):
    return self._learner.get_variables(names)

  def _save(self) -> None:
    if self._spec.get('checkpoint_replay', True):
      self._replay_client.checkpoint()  # first: never older than the learner's
    counts = self._counter.get_counts()
    meta = dict(counts, elapsed_s=_elapsed(self._spec))
    self._checkpointer.save(int(counts.get('actor_steps', 0)),
                            self._learner.save(), meta)

  def _watch_for_stop(self) -> None:
    while not self._control.stop_requested():
      time.sleep(0.2)
    code = 0
    try:
      self._save()
      self._control.set_status('learner', control_lib.DONE,
                               learner_steps=self._learner.sgd_steps)
    except Exception as e:  # pylint: disable=broad-except
      self._control.record_failure('learner', e)
      code = 1
    os._exit(code)  # the SGD thread may be blocked inside reverb

  def run(self) -> None:
    with self._control.node('learner'):
      threading.Thread(target=self._watch_for_stop, daemon=True).start()
      k = self._config.sgd_steps_per_learner_step
      local = counting.Counter(self._counter, time_delta=1.0)
      last_save = time.time()
      every = float(self._spec.get('checkpoint_every_s', 600.0))
      while True:  # ends in the watcher thread (os._exit) after STOP
        self._learner.step()
        local.increment(learner_steps=k)
        if time.time() - last_save >= every:
          self._save()
          last_save = time.time()


def run_actor(index: int, replay_client, learner, counter, spec: Spec) -> None:
  """Actor node: steps its own environment and writes n-step transitions."""
  control = control_lib.Control(spec['workdir'])
  name = f'actor_{index}'
  with control.node(name):
    config = _config(spec)
    resume = int(spec.get('start_actor_steps', 0))
    env = _environment(spec, _derived_seed(spec['seed'], index, resume))
    networks = single_process.make_networks(
        environments.environment_spec(env), config)
    actor = acting.WPOActor(
        networks.policy,
        acting.VariableClient(learner, 'policy', config.variable_update_period),
        seed=_derived_seed(spec['seed'], index, resume, 1),
        adder=replay.make_adder(replay_client, config.n_step, config.discount))
    local = counting.Counter(counter, time_delta=1.0)
    fail_at = _fault_step(name)
    steps = 0
    while not control.stop_requested():
      timestep = env.reset()
      actor.observe_first(timestep)
      while not timestep.last():
        action = actor.select_action(timestep.observation)
        timestep = env.step(action)
        actor.observe(action, next_timestep=timestep)
        actor.update()
        steps += 1
        if steps == fail_at:
          raise RuntimeError(f'injected fault in {name} at step {steps} '
                             f'({_FAULT_ENV})')
        if steps % _COUNT_EVERY == 0:
          local.increment(actor_steps=_COUNT_EVERY)
          if control.stop_requested():
            break
      if not timestep.last():
        break
      local.increment(episodes=1)
    local.increment(actor_steps=steps % _COUNT_EVERY)


def run_evaluator(learner, counter, spec: Spec) -> None:
  """Evaluator node: deterministic-policy returns every `eval_every` actor steps."""
  control = control_lib.Control(spec['workdir'])
  with control.node('evaluator'):
    config = _config(spec)
    env = _environment(spec, spec['seed'] + 10_000)
    networks = single_process.make_networks(
        environments.environment_spec(env), config)
    actor = acting.WPOActor(networks.policy,
                            acting.VariableClient(learner, 'policy', 1),
                            seed=spec['seed'], deterministic=True)
    logger = logs.make_run_loggers(spec['workdir'], 'eval', 'actor_steps',
                                   spec.get('tensorboard', True))
    every = int(spec['eval_every'])
    next_eval = (int(spec.get('start_actor_steps', 0)) // every + 1) * every
    while not control.stop_requested():
      counts = counter.get_counts()
      actor_steps = int(counts.get('actor_steps', 0))
      if actor_steps < next_eval:
        time.sleep(0.5)
        continue
      returns = single_process.evaluate(env, actor, int(spec['eval_episodes']))
      logger.write(dict(actor_steps=actor_steps,
                        learner_steps=int(counts.get('learner_steps', 0)),
                        eval_return_mean=float(returns.mean()),
                        eval_return_std=float(returns.std()),
                        wall_time=_elapsed(spec)))
      next_eval = (actor_steps // every + 1) * every


def run_step_limiter(counter, spec: Spec) -> None:
  """Ends the program at max_actor_steps; publishes counts for the supervisor."""
  control = control_lib.Control(spec['workdir'])
  with control.node('step_limiter'):
    limit = int(spec['max_actor_steps'])
    while not control.stop_requested():
      counts = counter.get_counts()
      control.write_progress(counts)
      if counts.get('actor_steps', 0) >= limit:
        control.request_stop(f'reached max_actor_steps={limit}')
        break
      time.sleep(0.5)
