"""Several hosts as one learner (distributed/hosts.py), simulated on 127.0.0.1.

The decision rule and the flags are checked directly; then two learner
processes joined by jax.distributed (JAX's CPU collectives over gloo). Two
whole programs: test_multihost_programs.py.
"""

import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

from wpo_agent import runs
from wpo_agent.distributed import hosts


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
def test_two_hosts_step_identically_and_as_one_host_on_both_batches(
    tmp_path):
  script = os.path.join(TESTS, 'multihost_learner.py')
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      [sys.executable, script, 'host', str(h), str(port),
       str(tmp_path / f'host{h}.npz')], env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for h in (0, 1)]
  outs = [proc.communicate(timeout=300) for proc in procs]
  for proc, (out, _) in zip(procs, outs):
    # Both hosts' errors: when one dies, the other only says that it did.
    assert proc.returncode == 0 and 'OK 300' in out, '\n'.join(
        f'--- host {h} (exit {p.returncode}) ---\n{e[-2000:]}'
        for h, (p, (_, e)) in enumerate(zip(procs, outs)))
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
