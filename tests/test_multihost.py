"""Several hosts as one learner (distributed/hosts.py), simulated on 127.0.0.1.

The decision rule and the flags are checked directly; then two learner
processes joined by jax.distributed (JAX's CPU collectives over gloo), and
two whole programs (launch/run_local.py --num_hosts=2) that train, stop on a
signal to one host, resume and fail together.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import psutil
import pytest

from wpo_agent import runs
from wpo_agent.distributed import hosts

import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, 'tests')
RUN_HOST = os.path.join(REPO, 'launch', 'multihost', 'run_host.sh')


# --- the decision every host takes ------------------------------------------


def _rows(*rows):
  return np.stack([hosts.make_row(actor_steps=a, stop=s, save=v)
                   for a, s, v in rows])


def test_decision_sums_steps_and_applies_the_global_limit():
  d = hosts.decide(_rows((300, 0, False), (450, 0, False)),
                   max_actor_steps=1000)
  assert (d.global_actor_steps, d.stop, d.save) == (750, hosts.RUNNING, False)
  # Neither host alone reached 1000; their sum did.
  d = hosts.decide(_rows((600, 0, False), (450, 0, False)),
                   max_actor_steps=1000)
  assert (d.global_actor_steps, d.stop, d.save) == (1050, hosts.STEP_LIMIT,
                                                    True)
  assert d.reason() == 'reached max_actor_steps'


def test_decision_precedence_names_the_hosts():
  d = hosts.decide(_rows((5, hosts.STOP_SIGNAL, False), (5, 0, True),
                         (5, hosts.FAILED, False)), max_actor_steps=10**6)
  assert d.stop == hosts.FAILED and d.failed_hosts == (2,) and d.save
  assert d.reason() == 'host 2 failed'
  d = hosts.decide(_rows((5, 0, False), (5, hosts.STOP_SIGNAL, False)),
                   max_actor_steps=10**6)
  assert d.reason() == 'stop requested on host 1' and d.failed_hosts == ()
  d = hosts.decide(_rows((5, 0, True), (5, 0, False)), max_actor_steps=10**6)
  assert d.save and d.stop == hosts.RUNNING


def test_stop_codes_from_the_control_reasons():
  assert hosts.stop_code(None) == hosts.RUNNING
  assert hosts.stop_code('reached max_actor_steps=5000') == hosts.STEP_LIMIT
  assert hosts.stop_code('node actor_1 failed') == hosts.FAILED
  assert hosts.stop_code('a node failed') == hosts.FAILED
  assert hosts.stop_code('stop signal received by the supervisor') == (
      hosts.STOP_SIGNAL)


def test_common_checkpoint_step():
  assert hosts.common_step([-1, -1]) is None
  assert hosts.common_step([12000, 14000]) == 12000
  assert hosts.common_step([-1, 14000]) == 14000


def test_row_refuses_counts_beyond_int32():
  with pytest.raises(ValueError, match='int32'):
    hosts.make_row(actor_steps=2**31, stop=0, save=False)


def test_a_lost_peer_is_named_when_it_can_only_be_one():
  error = RuntimeError('Gloo AllGather failed: Read error [10.0.0.3]:6018')
  assert hosts.peer_lost_reason(error, host_id=0, num_hosts=2) == (
      "lost contact with host 1's learner (Gloo AllGather failed: Read error "
      '[10.0.0.3]:6018)')
  assert hosts.peer_lost_reason(error, host_id=1, num_hosts=2).startswith(
      "lost contact with host 0's learner")
  assert hosts.peer_lost_reason(error, host_id=0, num_hosts=3).startswith(
      "lost contact with another host's learner")


def test_environment_defaults():
  env = dict(JAX_COORDINATOR_ADDRESS='10.0.0.2:8476', JAX_NUM_PROCESSES='4',
             JAX_PROCESS_ID='3')
  assert hosts.environment_defaults(env) == ('10.0.0.2:8476', 4, 3)
  assert hosts.environment_defaults({}) == (None, None, None)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_hosts=0), '--num_hosts=0: must be an integer >= 1'),
    (dict(num_hosts=2, host_id=2, coordinator_address='a:1'),
     '--host_id=2: must be an integer in [0, 1]'),
    (dict(num_hosts=2), '--coordinator_address=None: a run on 2 hosts needs'),
    (dict(num_hosts=2, coordinator_address='10.0.0.2'), 'needs HOST:PORT'),
    (dict(num_hosts=2, coordinator_address='a:1', single_process=True),
     'drop --single_process'),
])
def test_bad_host_options(kwargs, message):
  with pytest.raises(runs.RunOptionsError, match=message.replace(
      '[', r'\[').replace(']', r'\]')):
    runs.RunOptions(domain='cartpole', **kwargs)


def test_host_workdirs():
  run = runs.RunOptions(domain='cartpole', workdir='w', num_hosts=2,
                        host_id=1, coordinator_address='a:1')
  assert run.host_workdir == os.path.join('w', 'host_1')
  assert runs.RunOptions(domain='cartpole', workdir='w').host_workdir == 'w'


def test_nodes_import_without_starting_jax():
  # jax.distributed.initialize must come before any backend starts in the
  # learner process, which imports these first.
  script = ('from jax._src import xla_bridge as xb\n'
            'import wpo_agent.distributed.program\n'
            'assert not xb._backends, "a JAX backend started on import"\n'
            'print("OK")')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
  assert 'OK' in out.stdout, out.stderr[-2000:]


# --- two learner processes as one --------------------------------------------


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
              MUJOCO_GL='egl')


@pytest.mark.slow
@pytest.mark.xdist_group('programs')  # one program at a time
def test_two_hosts_step_identically_and_as_one_host_on_both_batches(
    tmp_path):
  script = os.path.join(TESTS, 'multihost_learner.py')
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      [sys.executable, script, 'host', str(h), str(port),
       str(tmp_path / f'host{h}.npz')], env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for h in (0, 1)]
  for proc in procs:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and 'OK 300' in out, err[-3000:]
  single = subprocess.run(
      [sys.executable, script, 'single', str(tmp_path / 'single.npz')],
      env=dict(_env(), XLA_FLAGS='--xla_force_host_platform_device_count=2'),
      capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  h0, h1, one = (np.load(tmp_path / f'{n}.npz')
                 for n in ('host0', 'host1', 'single'))
  assert int(h0['steps']) == int(one['steps']) == 300
  assert len(h0.files) > 10  # every parameter leaf
  for name in h0.files:
    np.testing.assert_array_equal(h0[name], h1[name])  # bit-identical
    np.testing.assert_array_equal(h0[name], one[name])


# --- two whole programs -----------------------------------------------------

TINY = tiny.flags(policy_layer_sizes=(32, 32), critic_layer_sizes=(32, 32),
                  min_replay_size=256)


def _launch_hosts(workdir, max_steps, port, extra_env=(None, None)):
  """Both hosts' launch/multihost/run_host.sh on one shared workdir (host 1
  writes under workdir/host_1)."""
  procs = []
  for host in (0, 1):
    cmd = ['bash', RUN_HOST, str(host), '2', f'127.0.0.1:{port}',
           '--domain=cartpole', '--task=swingup', '--config=small',
           '--num_actors=1', f'--max_actor_steps={max_steps}',
           '--eval_every=2000', '--eval_episodes=1', f'--workdir={workdir}',
           '--progress_every=2'] + TINY
    procs.append(subprocess.Popen(
        cmd, env=dict(_env(), WPO_PYTHON=sys.executable,
                      **(extra_env[host] or {})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  return procs


def _kill(procs):
  for proc in procs:
    if proc.poll() is None:
      proc.kill()


def _finish(procs, timeout):
  outs = []
  try:
    for proc in procs:
      outs.append(proc.communicate(timeout=timeout))
  finally:
    _kill(procs)
  return outs


def _once_learning(workdir, procs, act):
  """act() once the learners step; returns (when, both hosts' outputs)."""
  deadline = time.time() + 240
  try:
    while _progress(workdir).get('learner_steps', 0) == 0:
      assert time.time() < deadline, 'the learners did not start stepping'
      assert all(p.poll() is None for p in procs), 'a host exited early'
      time.sleep(0.5)
    act()
  except BaseException:
    _kill(procs)
    raise
  return time.time(), _finish(procs, 90)


def _meta(workdir):
  from wpo_agent import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.HostCheckpointer(workdir).latest_metadata()


def _progress(workdir):
  from wpo_agent.distributed import control  # pylint: disable=g-import-not-at-top
  return control.Control(workdir).read_progress() or {}


def _left_behind(workdir):
  logs = [os.path.join(os.path.abspath(d), 'logs')
          for d in (workdir, os.path.join(workdir, 'host_1'))]
  found = []
  for proc in psutil.process_iter():
    try:
      if proc.environ().get('LAUNCHPAD_LOGGING_DIR') in logs:
        found.append(proc)
    except (psutil.Error, OSError):
      continue
  return found


@pytest.mark.slow
@pytest.mark.xdist_group('programs')  # one program at a time
def test_two_host_run_stops_on_one_signal_resumes_and_finishes(tmp_path):
  workdir = str(tmp_path / 'run')
  host1 = os.path.join(workdir, 'host_1')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port())
  sent, outs = _once_learning(  # SIGTERM to one host only
      workdir, procs, lambda: procs[1].send_signal(signal.SIGTERM))
  assert time.time() - sent < 60
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
    assert 'stopped early' in out
  assert 'stop requested on host 1' in outs[0][0]
  first0, first1 = _meta(workdir), _meta(host1)
  # Saved together: the same global count, which is the sum of the hosts'.
  assert first0['global_actor_steps'] == first1['global_actor_steps'] == (
      first0['actor_steps'] + first1['actor_steps'])
  assert first1['device_replay_filled_per_shard'] > 0
  assert not _left_behind(workdir)

  limit = first0['global_actor_steps'] + 2000
  procs = _launch_hosts(workdir, limit, portpicker.pick_unused_port())
  outs = _finish(procs, 300)
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
    assert 'finished' in out
  final0, final1 = _meta(workdir), _meta(host1)
  assert final0['global_actor_steps'] == final1['global_actor_steps'] == (
      final0['actor_steps'] + final1['actor_steps']) >= limit
  # Host 1 resumed too: it joined the resumed run's exchanges and saved its
  # own checkpoint at the new global count. (Its actors may add nothing: host
  # 0's alone can reach a 2000-step limit before host 1's start.)
  assert final1['global_actor_steps'] >= limit > first1['global_actor_steps']
  assert final1['actor_steps'] >= first1['actor_steps']
  assert final0['learner_steps'] > first0['learner_steps']
  with open(os.path.join(workdir, 'eval.csv')) as f:
    rows = list(csv.DictReader(f))
  assert int(rows[-1]['actor_steps']) >= limit  # evaluated at the end
  assert not os.path.exists(os.path.join(host1, 'eval.csv'))  # host 0 only
  assert f'all hosts: {final0["global_actor_steps"]} actor steps' in outs[0][0]
  assert not _left_behind(workdir)


@pytest.mark.slow
@pytest.mark.xdist_group('programs')  # one program at a time
def test_a_failure_on_one_host_stops_both_and_is_named(tmp_path):
  workdir = str(tmp_path / 'run')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port(),
                        extra_env=(None, {'WPO_FAULT_INJECT': 'actor_0@1500'}))
  start = time.time()
  outs = _finish(procs, 240)
  # Host 1's actor raised at its step 1500 (after the learners started).
  assert time.time() - start < 240
  for proc in procs:
    assert proc.returncode != 0
  assert 'actor_0' in outs[1][1]
  assert 'host 1 failed' in outs[0][1]
  assert not _left_behind(workdir)


def test_host_checkpointer_round_trip_and_keeps_two(tmp_path):
  from wpo_agent import checkpointing  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  state = {'w': rng.normal(size=(3, 4)).astype(np.float32),
           'opt': (np.int32(7), rng.normal(size=(2,)).astype(np.float32)),
           'key': np.array([1, 2], np.uint32)}
  replay = {'obs': rng.normal(size=(1, 5, 3)).astype(np.float32)}
  ckpt = checkpointing.HostCheckpointer(str(tmp_path))
  assert ckpt.restore(state) is None and ckpt.latest_metadata() is None
  for step in (100, 200, 300):
    ckpt.save(step, state, {'actor_steps': step}, replay=replay)
  reader = checkpointing.HostCheckpointer(str(tmp_path))
  assert reader.all_steps() == (200, 300)  # the newest two
  like = {'w': np.zeros((3, 4), np.float32),
          'opt': (np.int32(0), np.zeros(2, np.float32)),
          'key': np.zeros(2, np.uint32)}
  got, meta = reader.restore(like)
  assert meta == {'actor_steps': 300}
  for a, b in zip(jax_leaves(got), jax_leaves(state)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
      reader.restore_replay({'obs': np.zeros((1, 5, 3))}, 200)['obs'],
      replay['obs'])
  assert reader.restore(like, 200)[1] == {'actor_steps': 200}


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)


@pytest.mark.slow
@pytest.mark.xdist_group('programs')  # one program at a time
def test_killing_one_hosts_learner_stops_both(tmp_path):
  workdir = str(tmp_path / 'run')
  status = os.path.join(workdir, 'host_1', 'control', 'nodes', 'learner.json')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port())

  def kill_learner():
    with open(status) as f:
      os.kill(json.load(f)['pid'], signal.SIGKILL)
  killed, outs = _once_learning(workdir, procs, kill_learner)
  assert time.time() - killed < 60
  assert [p.returncode != 0 for p in procs] == [True, True]
  assert 'node learner' in outs[1][1]  # host 1: its learner died
  assert "lost contact with host 1's learner" in outs[0][1]
  # Host 0 sees host 1's control files (a shared workdir) and names it.
  assert 'host 1: node learner' in outs[0][1]
  assert not _left_behind(workdir)


def _host_processes(workdir, host, launcher):
  """Host `host`'s launcher (if alive) and its program's processes."""
  logs = os.path.join(os.path.abspath(workdir),
                      *(['host_1'] if host == 1 else []), 'logs')
  found = [launcher] if launcher.poll() is None else []
  for proc in psutil.process_iter():
    try:
      if proc.environ().get('LAUNCHPAD_LOGGING_DIR') == logs:
        found.append(proc)
    except (psutil.Error, OSError):
      continue
  return found


@pytest.mark.slow
@pytest.mark.xdist_group('programs')  # one program at a time
@pytest.mark.parametrize('lost', ['every process', 'the launcher'])
def test_losing_host_1_stops_host_0_and_leaves_nothing(tmp_path, lost):
  """A lost machine (kill -9 of all its processes), or only its launcher
  killed: host 0 stops non-zero within 60 s naming host 1."""
  workdir = str(tmp_path / 'run')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port())

  def kill_host_1():
    victims = (_host_processes(workdir, 1, procs[1])
               if lost == 'every process' else [procs[1]])
    for proc in victims:
      proc.kill()
  killed, outs = _once_learning(workdir, procs, kill_host_1)
  assert time.time() - killed < 60
  assert procs[0].returncode == 1
  assert procs[1].returncode == -signal.SIGKILL
  err0 = outs[0][1]
  if lost == 'every process':
    assert "lost contact with host 1's learner" in err0, err0[-3000:]
  else:  # host 1's program stopped the hosts together, then its own nodes
    assert 'stopped with the other hosts: host 1 failed' in err0, err0[-3000:]
    assert f'host 1: the launcher (pid {procs[1].pid}) failed' in err0
  deadline = time.time() + 60
  while _left_behind(workdir):
    assert time.time() < deadline, 'processes of a host were left behind'
    time.sleep(0.5)


def test_no_namespace_tools_gives_the_command_back_and_why(monkeypatch):
  from wpo_agent.distributed import netns  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(netns.shutil, 'which', lambda tool: None)
  assert netns.isolated(['python', 'x']) == (['python', 'x'],
                                             'unshare and ip not found')


def test_kubernetes_manifest_agrees_with_itself():
  import yaml  # pylint: disable=g-import-not-at-top
  with open(os.path.join(REPO, 'launch', 'multihost', 'kubernetes.yaml')) as f:
    service, job = list(yaml.safe_load_all(f))
  spec = job['spec']
  pod = spec['template']['spec']
  env = {e['name']: e['value'] for e in pod['containers'][0]['env']}
  assert spec['completionMode'] == 'Indexed'
  assert spec['completions'] == spec['parallelism'] == int(
      env['JAX_NUM_PROCESSES'])
  host, port = env['JAX_COORDINATOR_ADDRESS'].split(':')
  assert host == f'{job["metadata"]["name"]}-0.{pod["subdomain"]}'
  assert pod['subdomain'] == service['metadata']['name']
  assert service['spec']['clusterIP'] == 'None'
  assert int(port) == service['spec']['ports'][0]['port']


def test_run_host_script_without_ids_says_what_is_missing():
  out = subprocess.run(
      ['bash', os.path.join(REPO, 'launch', 'multihost', 'run_host.sh'),
       '--domain=cartpole'], capture_output=True, text=True, timeout=60,
      env={k: v for k, v in os.environ.items()
           if not k.startswith(('JAX_', 'SLURM_', 'JOB_COMPLETION'))})
  assert out.returncode == 2
  assert out.stderr.startswith('error: JAX_PROCESS_ID is not set; usage:')
