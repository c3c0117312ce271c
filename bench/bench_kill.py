"""How fast a run ends when its launcher or its program is killed (kill -9).

Starts `make run`'s command (cartpole-swingup, small preset, 2 actors, device
replay) in a fresh workdir; once the learner runs and the actors are 1000
steps past the newest checkpoint, kills the chosen process with SIGKILL and
measures, until every process of the run is gone:
  launcher: the program notices, the learner checkpoints, every node ends;
  program:  the launcher notices, names it, waits for the checkpoint, ends
            the nodes, exits 1.
Per kill it prints seconds to the last process gone, the checkpoint's actor
step before and after the kill, and the rerun's first line (a resume).

Usage: .venv/bin/python bench/bench_kill.py [--repeats 2] [--json]
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

import common

RUN_LOCAL = os.path.join(common.ROOT, 'launch', 'run_local.py')
FLAGS = ['--domain=cartpole', '--task=swingup', '--config=small',
         '--num_actors=2', '--envs_per_actor=4', '--max_actor_steps=1000000',
         '--progress_every=1']


def _run_processes(workdir):
  logs = os.path.join(workdir, 'logs')
  found = []
  for proc in psutil.process_iter():
    try:
      if proc.environ().get('LAUNCHPAD_LOGGING_DIR') == logs:
        found.append(proc)
    except (psutil.Error, OSError):
      continue
  return found


def _checkpoint_step(workdir):
  try:
    steps = [int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints'))
             if d.isdigit()]
  except OSError:
    return 0
  return max(steps, default=0)


def _actor_steps(workdir):
  try:
    with open(os.path.join(workdir, 'control', 'progress.json')) as f:
      return json.load(f).get('actor_steps', 0)
  except (OSError, ValueError):
    return 0


def _learner_running(workdir):
  """The learner has entered its loop (a resumed run's counts start at the
  checkpoint's, so they cannot tell)."""
  try:
    with open(os.path.join(workdir, 'control', 'nodes', 'learner.json')) as f:
      return json.load(f)['state'] == 'running'
  except (OSError, ValueError, KeyError):
    return False


def one_kill(target: str, workdir: str) -> dict:
  launcher = subprocess.Popen([sys.executable, RUN_LOCAL, *FLAGS,
                               f'--workdir={workdir}'],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not _learner_running(workdir):
    if time.time() > deadline or launcher.poll() is not None:
      raise RuntimeError('the run did not start learning')
    time.sleep(0.5)
  before = _checkpoint_step(workdir)
  while _actor_steps(workdir) < before + 1000:  # work the kill could lose
    if time.time() > deadline or launcher.poll() is not None:
      raise RuntimeError('the run did not step')
    time.sleep(0.2)
  if target == 'launcher':
    victim = psutil.Process(launcher.pid)
  else:
    victim, = [p for p in psutil.Process(launcher.pid).children()
               if 'wpo_agent.distributed.program' in p.cmdline()]
  killed = time.time()
  victim.kill()
  while _run_processes(workdir) or launcher.poll() is None:
    if time.time() - killed > 120:
      raise RuntimeError('processes were left after 120 s')
    time.sleep(0.1)
  gone_s = time.time() - killed
  err = launcher.stderr.read()
  return dict(killed=target, all_gone_s=round(gone_s, 2),
              launcher_exit=launcher.returncode,
              checkpoint_before=before, checkpoint_after=_checkpoint_step(
                  workdir),
              launcher_said=err.strip().splitlines()[0] if err.strip() else '')


def main():
  args = common.add_flags(common.parser(__doc__), repeats=2,
                          json=False).parse_args()
  print(f'load average at start: {common.load_average()}')
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, 'run')  # one run, resumed after each kill
    rows = [one_kill(target, workdir) for _, target in common.interleave(
        ('launcher', 'program'), args.repeats)]
  common.print_table(
      ['killed', 'all gone s', 'launcher exit', 'ckpt before', 'ckpt after'],
      [[r['killed'], r['all_gone_s'], r['launcher_exit'],
        r['checkpoint_before'], r['checkpoint_after']] for r in rows])
  for r in rows:
    if r['launcher_said']:
      print(f'{r["killed"]}: {r["launcher_said"][:150]}')
  if args.json:
    common.emit_json(dict(bench='kill', rows=rows))


if __name__ == '__main__':
  main()
