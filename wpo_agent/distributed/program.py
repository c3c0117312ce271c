"""The Launchpad program (the only module that imports Launchpad), and its launcher.

  replay (Reverb) <- actors x N -> counter <- learner -> checkpoints
       \\__________ learner's dataset ____/      ^
  evaluator (deterministic policy, eval.csv) ---/   step limiter (ends the run)

Run as `python -m wpo_agent.distributed.program SPEC.json`: the supervisor
(`supervisor.py`) starts this in its own session and owns its lifetime; if the
supervisor dies, this process stops the run itself
(`bookkeeping.watch_launcher`).
"""

import functools
import json
import sys
from typing import Any, Dict

import launchpad as lp
from launchpad.nodes.python import local_multi_processing

from wpo_agent.distributed import bookkeeping

Spec = Dict[str, Any]  # nodes.Spec: the run's JSON spec (supervisor.make_spec)

# Actors and the evaluator run their small policy on the CPU; one XLA thread
# each keeps N actor processes from oversubscribing the cores, and they must not
# grab GPU memory on accelerator hosts.
_CPU_WORKER_ENV = {
    'JAX_PLATFORMS': 'cpu',
    'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=false '
                 'intra_op_parallelism_threads=1',
    'CUDA_VISIBLE_DEVICES': '',
}


# The nodes' entry points. This process only builds and launches the graph:
# what a node needs (JAX, TensorFlow through Reverb, MuJoCo: ~4 s of CPU to
# import) is imported in that node's own process, when Launchpad calls its
# entry point there, and not once more here before any node can start
# (BUILD_NOTES.md, "Test time"). The counter and the step limiter need none of
# it (bookkeeping).


def _replay_tables(spec: Spec):
  from wpo_agent.distributed import nodes  # pylint: disable=g-import-not-at-top
  return nodes.make_replay_tables(spec)


def _replay_checkpointer(workdir: str):
  from wpo_agent import replay  # pylint: disable=g-import-not-at-top
  # The supervisor checked it before launch (supervisor._run_claimed): a
  # second walk would read the whole checkpoint again.
  return replay.make_checkpointer(workdir, check=False)


def _learner(replay, counter, spec: Spec):
  from wpo_agent.distributed import nodes  # pylint: disable=g-import-not-at-top
  return nodes.LearnerNode(replay, counter, spec)


def _actor(index: int, replay, learner, counter, spec: Spec) -> None:
  from wpo_agent.distributed import nodes  # pylint: disable=g-import-not-at-top
  nodes.run_actor(index, replay, learner, counter, spec)


def _evaluator(learner, counter, spec: Spec) -> None:
  from wpo_agent.distributed import nodes  # pylint: disable=g-import-not-at-top
  nodes.run_evaluator(learner, counter, spec)


def build_program(spec: Spec) -> lp.Program:
  """Replay, counter, learner, `num_actors` actors, evaluator, step limiter."""
  run = spec['run']  # runs.RunOptions' fields, validated by the launcher
  program = lp.Program('wpo')
  with program.group('replay'):
    replay = program.add_node(lp.ReverbNode(
        functools.partial(_replay_tables, spec),
        checkpoint_ctor=(
            functools.partial(_replay_checkpointer, run['workdir'])
            if run['checkpoint_replay'] else None)))
  with program.group('counter'):
    counter = program.add_node(lp.CourierNode(
        bookkeeping.make_counter, spec))
  with program.group('learner'):
    learner = program.add_node(lp.CourierNode(_learner, replay, counter, spec))
  with program.group('actor'):
    for index in range(run['num_actors']):
      program.add_node(lp.PyNode(_actor, index, replay, learner, counter,
                                 spec))
  if run['host_id'] == 0:  # one evaluator per run
    with program.group('evaluator'):
      program.add_node(lp.PyNode(_evaluator, learner, counter, spec))
  with program.group('step_limiter'):
    program.add_node(lp.PyNode(bookkeeping.run_step_limiter, counter, spec))
  return program


def launch(spec: Spec) -> None:
  """Launches the program and blocks until its nodes exit (or we are killed)."""
  program = build_program(spec)
  if spec['run']['lp_launch_type'] == 'local_mt':
    manager = lp.launch(program, launch_type=lp.LaunchType.LOCAL_MULTI_THREADING)
  else:
    cpu = local_multi_processing.PythonProcess(env=_CPU_WORKER_ENV)
    # output_to_files: one log per node under $LAUNCHPAD_LOGGING_DIR.
    manager = lp.launch(program, launch_type=lp.LaunchType.LOCAL_MULTI_PROCESSING,
                        terminal='output_to_files',
                        local_resources={'actor': cpu, 'evaluator': cpu,
                                         'step_limiter': cpu, 'counter': cpu})
  manager.wait()


def main(argv) -> None:
  with open(argv[1]) as f:
    spec = json.load(f)
  bookkeeping.watch_launcher(spec)
  launch(spec)


if __name__ == '__main__':
  main(sys.argv)
