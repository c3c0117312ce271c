"""Single-process WPO training: in-process Reverb, one actor, interleaved learner.

The learner is stepped whenever the data ratio allows: after `min_replay_size`
inserts, `samples_per_insert / (batch_size * K)` learner calls are owed per
inserted transition. The table here uses a plain MinSize limiter and this loop
keeps the ratio itself (a blocking ratio limiter would deadlock a single thread).
"""

import dataclasses
import json
import os
import time
from typing import Any, Dict, Optional

import jax
import numpy as np
import reverb

from wpo_agent import acting
from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import environments
from wpo_agent import learner as learner_lib
from wpo_agent import logs
from wpo_agent import networks as networks_lib
from wpo_agent import replay
from wpo_agent import stopping


@dataclasses.dataclass
class RunOptions:
  """Run-level options (not hyperparameters; those live in WPOConfig)."""
  domain: str = 'humanoid'
  task: Optional[str] = None
  seed: int = 0
  workdir: str = 'runs/default'
  max_actor_steps: int = 1_000_000
  eval_every: int = 10_000
  eval_episodes: int = 5
  progress_every_s: float = 5.0
  checkpoint_every_s: float = 600.0
  # Save the replay buffer with each checkpoint, so a resumed run continues
  # from the same data instead of refilling a small, fresh buffer.
  checkpoint_replay: bool = True
  tensorboard: bool = True
  quiet: bool = False


def make_networks(spec, config: config_lib.WPOConfig):
  return networks_lib.make_networks_from_spec(
      spec,
      policy_layer_sizes=config.policy_layer_sizes,
      critic_layer_sizes=config.critic_layer_sizes,
      policy_family=config.policy_family,
      num_components=config.num_components,
      init_scale=config.init_scale,
      min_scale=config.min_scale)


def evaluate(env, actor, episodes: int) -> np.ndarray:
  """Undiscounted returns of `episodes` episodes with the deterministic actor."""
  actor.update(wait=True)  # the evaluator's client refetches on every call
  returns = []
  for _ in range(episodes):
    timestep = env.reset()
    total = 0.0
    while not timestep.last():
      timestep = env.step(actor.select_action(timestep.observation))
      total += float(timestep.reward)
    returns.append(total)
  return np.asarray(returns)


class WorkdirMismatchError(ValueError):
  """The workdir holds a checkpoint this run could not continue."""


# What a checkpoint's shapes depend on; other fields may change on a resume.
_RESUME_FIXED_RUN = ('domain', 'task')
_RESUME_FIXED_CONFIG = ('policy_family', 'num_components', 'policy_layer_sizes',
                        'critic_layer_sizes')
# A restored reverb table keeps its checkpointed size and rate limiter, whatever
# the new config says, so these are fixed too while its replay is restored.
_RESUME_FIXED_REPLAY = ('max_replay_size', 'min_replay_size',
                        'samples_per_insert', 'rate_limiter')


def _non_empty_dir(path: str) -> bool:
  return os.path.isdir(path) and bool(os.listdir(path))


def check_resumable(workdir: str, run: RunOptions,
                    config: config_lib.WPOConfig) -> None:
  """Raises WorkdirMismatchError if `workdir` holds state this run can't use."""
  path = os.path.join(workdir, 'config.json')
  restores_replay = run.checkpoint_replay and _non_empty_dir(
      os.path.join(workdir, replay.REPLAY_CHECKPOINT_DIR))
  if not os.path.exists(path) or not (
      restores_replay or _non_empty_dir(os.path.join(workdir, 'checkpoints'))):
    return
  with open(path) as f:
    saved = json.load(f)
  new = {'run': dataclasses.asdict(run), 'config': config.to_dict()}
  fixed = [('run', _RESUME_FIXED_RUN), ('config', _RESUME_FIXED_CONFIG)]
  if restores_replay:
    fixed.append(('config', _RESUME_FIXED_REPLAY))
  diffs = [f'{name}: saved {saved[part].get(name)!r}, now {new[part][name]!r}'
           for part, names in fixed for name in names
           if _jsonable(saved[part].get(name)) != _jsonable(new[part][name])]
  if diffs:
    hint = (' (or --nocheckpoint_replay to start a fresh replay buffer)'
            if restores_replay and all(
                d.split(':')[0] in _RESUME_FIXED_REPLAY for d in diffs)
            else '')
    raise WorkdirMismatchError(
        f'workdir {workdir} holds checkpoints of a different run ('
        + '; '.join(diffs) + '); use another --workdir, or the saved values '
        f'to resume it{hint}')


def _jsonable(value):
  return json.loads(json.dumps(value))


def write_run_config(workdir: str, run: RunOptions,
                     config: config_lib.WPOConfig) -> None:
  """Writes config.json, after checking a resume would be compatible."""
  check_resumable(workdir, run, config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'run': dataclasses.asdict(run), 'config': config.to_dict()}, f,
              indent=2)


def train(run: RunOptions, config: config_lib.WPOConfig) -> Dict[str, Any]:
  """Trains until `max_actor_steps` or a stop signal; returns a summary dict."""
  task = environments.resolve_task(run.domain, run.task)
  workdir = run.workdir
  write_run_config(workdir, run, config)
  say = (lambda *a: None) if run.quiet else (lambda *a: print(*a, flush=True))

  checkpointer = checkpointing.Checkpointer(workdir)
  env = environments.make_environment(run.domain, task, seed=run.seed)
  spec = environments.environment_spec(env)
  networks = make_networks(spec, config)

  table = replay.make_replay_table(
      spec, max_size=config.max_replay_size, min_size=config.min_replay_size,
      rate_limiter='min_size')
  # With a replay checkpoint in the workdir, the server starts from it.
  server = reverb.Server([table], port=None, checkpointer=(
      replay.make_checkpointer(workdir) if run.checkpoint_replay else None))
  address = f'localhost:{server.port}'
  client = reverb.Client(address)
  k = config.sgd_steps_per_learner_step
  iterator = replay.make_dataset_iterator(
      address, batch_size=config.batch_size, num_sgd_steps=k,
      prefetch=config.prefetch_size)
  train_logger = logs.make_run_loggers(workdir, 'train', 'learner_steps',
                                       run.tensorboard)
  eval_logger = logs.make_run_loggers(workdir, 'eval', 'actor_steps',
                                      run.tensorboard)
  counts = dict(actor_steps=0, episodes=0, learner_calls=0, elapsed_s=0.0,
                last_eval_return=None, next_eval=run.eval_every)
  learner = learner_lib.WPOLearner(
      networks, config, iterator, jax.random.PRNGKey(run.seed),
      logger=logs.WithCounts(train_logger, counts, ('actor_steps',)))

  replay_items = replay.num_items(client)  # > 0 when restored from a checkpoint
  restored = checkpointer.restore(learner.save())
  if restored is not None:
    state, meta = restored
    learner.restore(state)
    counts.update(meta)
    say(f'Resumed from {checkpointer.directory} at actor step '
        f'{counts["actor_steps"]} (learner step {learner.sgd_steps}); ' + (
            f'replay restored with {replay_items} items.' if replay_items
            else f'replay refills to {config.min_replay_size} before '
            'learning resumes.'))
  # Actor steps this session must add before learning starts (none when the
  # restored replay already holds min_replay_size items).
  warmup = max(0, config.min_replay_size - replay_items)

  # Fresh randomness on each resume, reproducible from (seed, episodes).
  resume_seed = [run.seed, counts['episodes']]
  env = environments.make_environment(
      run.domain, task, seed=int(np.random.SeedSequence(resume_seed)
                                 .generate_state(1)[0] % 2**31))
  adder = replay.make_adder(client, config.n_step, config.discount)
  actor = acting.WPOActor(
      networks.policy,
      acting.VariableClient(learner, 'policy', config.variable_update_period),
      seed=int(np.random.SeedSequence(resume_seed + [1]).generate_state(1)[0]),
      adder=adder)
  eval_env = environments.make_environment(run.domain, task,
                                           seed=run.seed + 10_000)
  evaluator = acting.WPOActor(networks.policy,
                              acting.VariableClient(learner, 'policy', 1),
                              seed=run.seed, deterministic=True)

  progress = logs.Progress(run.max_actor_steps, config.batch_size)
  session_steps = 0
  session_calls = 0
  table_filled = False  # this session's table has reached min_replay_size
  start = time.time()
  elapsed0 = counts['elapsed_s']
  last_progress = last_ckpt = start

  def elapsed():
    return elapsed0 + time.time() - start

  def save():
    counts['elapsed_s'] = elapsed()
    if run.checkpoint_replay:
      adder.flush()  # so the checkpoint holds every item written so far
      client.checkpoint()  # first, so the learner's checkpoint is never older
    checkpointer.save(counts['actor_steps'], learner.save(), dict(counts))

  def maybe_evaluate(force=False):
    if not force and counts['actor_steps'] < counts['next_eval']:
      return
    returns = evaluate(eval_env, evaluator, run.eval_episodes)
    counts['last_eval_return'] = float(returns.mean())
    counts['next_eval'] = (counts['actor_steps'] // run.eval_every + 1
                           ) * run.eval_every
    eval_logger.write(dict(actor_steps=counts['actor_steps'],
                           learner_steps=learner.sgd_steps,
                           eval_return_mean=float(returns.mean()),
                           eval_return_std=float(returns.std()),
                           wall_time=elapsed()))

  say(f'Training WPO on {run.domain}-{task} to {run.max_actor_steps} actor '
      f'steps; logs and checkpoints in {os.path.abspath(workdir)}')
  stopped = False
  with stopping.GracefulStop() as stop:
    while counts['actor_steps'] < run.max_actor_steps and not stop.requested:
      timestep = env.reset()
      actor.observe_first(timestep)
      while not timestep.last() and not stop.requested:
        action = actor.select_action(timestep.observation)
        timestep = env.step(action)
        actor.observe(action, next_timestep=timestep)
        actor.update()
        counts['actor_steps'] += 1
        session_steps += 1

        ready = session_steps - warmup
        owed = int(ready * config.samples_per_insert /
                   (config.batch_size * k)) if ready >= 0 else 0
        if owed > session_calls and not table_filled:
          # The adder holds a few items in flight, so the table can still be
          # below min_replay_size here; sampling now would block this thread
          # (and so the actor that must insert them) forever.
          table_filled = replay.num_items(client) >= config.min_replay_size
        while table_filled and session_calls < owed:
          learner.step()
          session_calls += 1
          counts['learner_calls'] += 1

        now = time.time()
        if now - last_progress >= run.progress_every_s:
          say(progress.line(counts['actor_steps'], learner.sgd_steps,
                            counts['actor_steps'], counts['last_eval_return']))
          last_progress = now
        if now - last_ckpt >= run.checkpoint_every_s:
          save()
          last_ckpt = now
        if counts['actor_steps'] >= run.max_actor_steps:
          break
        maybe_evaluate()
      counts['episodes'] += 1
    stopped = stop.requested

  if not stopped:
    maybe_evaluate(force=counts['last_eval_return'] is None or
                   counts['actor_steps'] >= counts['next_eval'])
  save()
  checkpointer.close()
  # Close the writer while the server still runs: closing it later (when it
  # is garbage collected) waits out a 10 s flush timeout on a stopped server.
  if hasattr(adder, 'close'):
    adder.close()
  server.stop()
  summary = dict(domain=run.domain, task=task,
                 actor_steps=counts['actor_steps'],
                 learner_steps=learner.sgd_steps,
                 last_eval_return=counts['last_eval_return'],
                 elapsed_s=round(elapsed(), 1), stopped_early=stopped,
                 workdir=os.path.abspath(workdir))
  return summary
