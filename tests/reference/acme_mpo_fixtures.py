"""Writes tests/reference/fixtures/mpo_*.npz with Acme's MPO loss (the oracle
for wpo_agent.mpo_losses; read by tests/test_mpo_losses.py).

Not imported by the project or its tests: it runs once, in a scratch venv with
Acme's JAX dependencies (the project's venv has no tensorflow-probability):

  python3 -m venv /tmp/acme_ref_venv    # Python 3.11.7 was used
  /tmp/acme_ref_venv/bin/pip install jax==0.4.30 jaxlib==0.4.30 \
      tensorflow-probability==0.24.0 dm-tree==0.1.10 numpy==1.26.4
  # (numpy < 2: tfp 0.24's JAX substrate calls np.issctype.) pip added:
  # absl-py 2.5.1, attrs 26.1.0, cloudpickle 3.1.3, decorator 5.3.2, gast 0.7.0,
  # ml_dtypes 0.5.4, opt_einsum 3.4.0, scipy 1.17.1, six 1.17.0, wrapt 2.5.2
  /tmp/acme_ref_venv/bin/python tests/reference/acme_mpo_fixtures.py \
      --acme_git_dir=<a git clone of github.com/google-deepmind/acme>

It takes acme/jax/losses/mpo.py at ACME_COMMIT (770bc75e948c..., Acme's HEAD
when the fixtures were written) from that git dir (`git show`)
and loads that one file as a module. (Importing it as `acme.jax.losses.mpo`
would first run acme/__init__.py and acme/jax/losses/__init__.py, which import
dm_env, Reverb, Launchpad and TensorFlow through the IMPALA loss; mpo.py
itself imports only jax and tensorflow_probability.substrates.jax, so nothing
is stubbed.)

Everything is float64 (jax_enable_x64). Acme's loss is called as MPO(...,
per_dim_constraining=True, action_penalization=False) on MultivariateNormalDiag
online/target policies built from the loc/scale arrays stored here; the
gradients are those of Acme's (summed, [1]-shaped) loss w.r.t. the online loc
and scale and the three log-duals. Acme's log_temperature has shape [1].
"""

import argparse
import importlib.util
import os
import subprocess
import tempfile

import jax

jax.config.update('jax_enable_x64', True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow_probability

ACME_COMMIT = '770bc75e948cc276c785ebfcf3de0b0812b95e26'
_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')

# name: (N, B, D, seed, Q scale, epsilon, epsilon_mean, epsilon_stddev,
#        log_temperature, log_alpha_mean [D], log_alpha_stddev [D])
CASES = {
    'n8_b5_d3': (8, 5, 3, 0, 3.0, 0.1, 0.01, 1e-4,
                 0.4, [-1.2, 0.5, 2.0], [3.0, -0.7, 1.5]),
    'n8_b5_d1': (8, 5, 1, 1, 1.0, 0.05, 0.005, 1e-5,
                 -2.5, [0.8], [-3.0]),
    'n16_b4_d2': (16, 4, 2, 2, 20.0, 0.3, 0.1, 1e-3,
                  2.0, [-5.0, 4.0], [0.0, -10.0]),
}


def load_acme_mpo(acme_git_dir):
  source = subprocess.run(
      ['git', f'--git-dir={acme_git_dir}', 'show',
       f'{ACME_COMMIT}:acme/jax/losses/mpo.py'],
      check=True, capture_output=True, text=True).stdout
  path = os.path.join(tempfile.mkdtemp(), 'acme_jax_losses_mpo.py')
  with open(path, 'w') as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location('acme_jax_losses_mpo', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def make_inputs(num_samples, batch, dims, seed, q_scale):
  rng = np.random.RandomState(seed)
  target_loc = rng.normal(size=(batch, dims))
  target_scale = np.exp(rng.uniform(-1.0, 0.5, size=(batch, dims)))
  online_loc = target_loc + 0.3 * rng.normal(size=(batch, dims))
  online_scale = target_scale * np.exp(0.2 * rng.normal(size=(batch, dims)))
  actions = target_loc + target_scale * rng.normal(
      size=(num_samples, batch, dims))
  centre = rng.normal(size=(batch, dims))
  q_values = -q_scale * np.sum((actions - centre)**2, axis=-1)
  q_values += 0.1 * q_scale * rng.normal(size=(num_samples, batch))
  return dict(online_loc=online_loc, online_scale=online_scale,
              target_loc=target_loc, target_scale=target_scale,
              actions=actions, q_values=q_values)


def run_case(mpo, case):
  (num_samples, batch, dims, seed, q_scale, epsilon, epsilon_mean,
   epsilon_stddev, log_temperature, log_alpha_mean, log_alpha_stddev) = case
  inputs = make_inputs(num_samples, batch, dims, seed, q_scale)
  duals = dict(log_temperature=np.array([log_temperature]),
               log_alpha_mean=np.array(log_alpha_mean, np.float64),
               log_alpha_stddev=np.array(log_alpha_stddev, np.float64))
  loss_module = mpo.MPO(
      epsilon=epsilon, epsilon_mean=epsilon_mean,
      epsilon_stddev=epsilon_stddev, init_log_temperature=0.0,
      init_log_alpha_mean=0.0, init_log_alpha_stddev=0.0,
      per_dim_constraining=True, action_penalization=False)
  tfd = mpo.tfd

  def acme_loss(online_loc, online_scale, log_temp, log_alpha_m, log_alpha_s):
    params = mpo.MPOParams(log_temperature=log_temp, log_alpha_mean=log_alpha_m,
                           log_alpha_stddev=log_alpha_s)
    online = tfd.MultivariateNormalDiag(
        loc=online_loc, scale_diag=online_scale)
    target = tfd.MultivariateNormalDiag(
        loc=jnp.asarray(inputs['target_loc']),
        scale_diag=jnp.asarray(inputs['target_scale']))
    loss, stats = loss_module(params, online, target,
                              jnp.asarray(inputs['actions']),
                              jnp.asarray(inputs['q_values']))
    assert loss.shape == (1,), loss.shape
    return jnp.sum(loss), stats

  (loss, stats), grads = jax.value_and_grad(
      acme_loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(
          jnp.asarray(inputs['online_loc']),
          jnp.asarray(inputs['online_scale']),
          duals['log_temperature'], duals['log_alpha_mean'],
          duals['log_alpha_stddev'])
  out = dict(inputs, **duals, epsilon=np.float64(epsilon),
             epsilon_mean=np.float64(epsilon_mean),
             epsilon_stddev=np.float64(epsilon_stddev), loss=np.asarray(loss))
  for name, value in stats._asdict().items():
    if value is not None:  # penalty_kl_q_rel: None without MO-MPO
      out['stats_' + name] = np.asarray(value)
  for name, grad in zip(('online_loc', 'online_scale', 'log_temperature',
                         'log_alpha_mean', 'log_alpha_stddev'), grads):
    out['grad_' + name] = np.asarray(grad)
  for value in out.values():
    assert value.dtype == np.float64, value.dtype
  out['acme_commit'] = np.array(ACME_COMMIT)
  out['versions'] = np.array(
      f'jax {jax.__version__}, tensorflow-probability '
      f'{tensorflow_probability.__version__}, numpy {np.__version__}')
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--acme_git_dir', required=True)
  parser.add_argument('--out_dir', default=_OUT)
  args = parser.parse_args()
  mpo = load_acme_mpo(args.acme_git_dir)
  os.makedirs(args.out_dir, exist_ok=True)
  for name, case in CASES.items():
    path = os.path.join(args.out_dir, f'mpo_{name}.npz')
    np.savez(path, **run_case(mpo, case))
    print(f'wrote {path} ({os.path.getsize(path)} bytes)')


if __name__ == '__main__':
  main()
