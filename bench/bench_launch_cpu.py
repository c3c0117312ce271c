"""CPU time of each process of a short distributed run, and when nodes start.

    python bench/bench_launch_cpu.py [--steps 1500] [--backend reverb]

Launches launch/run_local.py (cartpole-swingup, `small` preset with the test
suite's tiny networks, 2 actors) into a fresh workdir, samples every process
of the run every 0.3 s (those whose LAUNCHPAD_LOGGING_DIR is the run's logs,
and the launcher) and prints, per process, when it appeared and its last CPU
time (user + system), then when each node reported running and done. What a
program launch costs the tests that start dozens of them (BUILD_NOTES.md,
"Test time").
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

import common

common.tests_on_path()
import tiny  # noqa: E402  (tests/tiny.py)


def _sample(launcher, logs, t0, seen, first):
  for proc in psutil.process_iter():
    try:
      if (proc.pid == launcher.pid or
          proc.environ().get('LAUNCHPAD_LOGGING_DIR') == logs):
        cpu = proc.cpu_times()
        seen[proc.pid] = (' '.join(proc.cmdline())[-80:], cpu.user + cpu.system)
        first.setdefault(proc.pid, time.time() - t0)
    except (psutil.Error, OSError):
      continue


def _node_events(nodes_dir, t0, events, names):
  for name in os.listdir(nodes_dir) if os.path.isdir(nodes_dir) else ():
    if not name.endswith('.json'):
      continue
    try:
      with open(os.path.join(nodes_dir, name)) as f:
        status = json.load(f)
    except (OSError, ValueError):
      continue
    events.setdefault((name[:-5], status['state']),
                      round(time.time() - t0, 1))
    names[status['pid']] = name[:-5]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--backend', default='reverb', choices=['reverb',
                                                              'device'])
  args = parser.parse_args()
  workdir = os.path.join(tempfile.mkdtemp(), 'run')
  cmd = [sys.executable, os.path.join(common.ROOT, 'launch', 'run_local.py'),
         '--domain=cartpole', '--task=swingup', '--config=small',
         '--num_actors=2', f'--max_actor_steps={args.steps}',
         '--eval_every=1000', '--eval_episodes=1', f'--workdir={workdir}',
         f'--set=replay_backend={args.backend}'] + tiny.flags(
             policy_layer_sizes=(32, 32), critic_layer_sizes=(32, 32),
             variable_update_period=100)
  t0 = time.time()
  launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
  logs = os.path.join(workdir, 'logs')
  seen, first, events, names = {}, {}, {}, {launcher.pid: 'launcher'}
  while launcher.poll() is None:
    _sample(launcher, logs, t0, seen, first)
    _node_events(os.path.join(workdir, 'control', 'nodes'), t0, events,
                 names)
    time.sleep(0.3)
  print(f'exit {launcher.returncode}, wall {time.time() - t0:.1f} s')
  for (node, state), when in sorted(events.items(), key=lambda kv: kv[1]):
    print(f'  {when:5.1f} s  {node} {state}')
  for pid, (cmdline, cpu) in sorted(seen.items(), key=lambda kv: first[kv[0]]):
    # Replay and counter report no status: told apart by their CPU.
    name = names.get(pid, 'program' if 'distributed.program' in cmdline
                     else 'replay or counter')
    print(f'  from {first[pid]:5.1f} s  cpu {cpu:5.1f} s  {name}')
  print(f'total cpu {sum(cpu for _, cpu in seen.values()):.1f} s')


if __name__ == '__main__':
  main()
