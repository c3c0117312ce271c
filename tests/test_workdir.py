"""workdir.py: the workdir contract's paths, as README documents them."""

import json
import os

from wpo_agent import workdir as workdir_lib


def test_paths_are_the_documented_names_under_an_absolute_root(tmp_path):
  w = workdir_lib.Workdir(os.path.relpath(tmp_path))
  assert w.root == str(tmp_path)
  names = {p: os.path.relpath(getattr(w, p), w.root) for p in (
      'config', 'checkpoints', 'replay', 'eval_csv', 'train_csv', 'tb',
      'control', 'logs', 'videos', 'lock')}
  assert names == dict(
      config='config.json', checkpoints='checkpoints', replay='replay',
      eval_csv='eval.csv', train_csv='train.csv', tb='tb', control='control',
      logs='logs', videos='videos', lock='run.lock')
  assert w.csv('eval') == w.eval_csv


def test_hosts_write_under_host_0s_workdir(tmp_path):
  w = workdir_lib.Workdir(str(tmp_path))
  assert w.host(0) is w
  assert w.host(2).root == str(tmp_path / 'host_2')
  assert w.host(2).checkpoints == str(tmp_path / 'host_2' / 'checkpoints')


def test_checkpoint_steps_and_config(tmp_path):
  w = workdir_lib.Workdir(str(tmp_path))
  assert w.checkpoint_steps() == []  # no folder yet
  for name in ('1200', '300', 'tmp-300.orbax-checkpoint-tmp', '45'):
    os.makedirs(os.path.join(w.checkpoints, name))
  assert w.checkpoint_steps() == [45, 300, 1200]  # numeric, not lexical
  with open(w.config, 'w') as f:
    json.dump({'run': {'seed': 3}, 'config': {}}, f)
  assert w.read_config()['run'] == {'seed': 3}


def test_last_eval_skips_a_row_cut_short(tmp_path):
  w = workdir_lib.Workdir(str(tmp_path))
  assert w.last_eval() is None  # no eval.csv
  with open(w.eval_csv, 'w') as f:
    f.write('actor_steps,learner_steps,eval_return_mean\n'
            '1000,10,12.5\n2000,20,31.0\n3000,3')  # a kill cut the last row
  assert w.last_eval() == (2000, 31.0)
