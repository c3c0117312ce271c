"""WPOConfig: presets, validation (ConfigError naming field and value), --set parsing."""

import dataclasses

import pytest

from wpo_agent import config as config_lib
from wpo_agent.config import ConfigError


@pytest.mark.parametrize('preset', sorted(config_lib.PRESETS))
def test_presets_construct(preset):
  config = config_lib.make_config(preset)
  assert isinstance(config, config_lib.WPOConfig)
  for name, value in config_lib.PRESETS[preset].items():
    assert getattr(config, name) == value


def test_default_preset_is_acme():
  assert config_lib.make_config() == config_lib.make_config('acme')


def test_acme_preset_matches_run_wpo():
  config = config_lib.make_config('acme')
  assert config.policy_layer_sizes == (256, 256, 256)
  assert config.critic_layer_sizes == (256, 256, 256)
  assert config.bootstrap_aggregate == 'mean'
  assert config.samples_per_insert == 64.0
  assert config.batch_size == 256
  assert config.num_action_samples == 20
  assert config.n_step == 5
  assert config.discount == 0.99
  assert config.target_update_period == 100


def test_paper_preset():
  config = config_lib.make_config('paper')
  assert config.bootstrap_aggregate == 'max'
  assert config.policy_layer_sizes == (256, 256, 128)
  assert config.critic_layer_sizes == (512, 512, 256)
  assert config.max_replay_size == 2_000_000


def test_small_preset_is_small():
  config = config_lib.make_config('small')
  assert max(config.policy_layer_sizes) <= 128
  assert max(config.critic_layer_sizes) <= 256


def test_overrides_apply_on_top_of_preset():
  config = config_lib.make_config('paper', batch_size=64,
                                  policy_layer_sizes=[8, 8])
  assert config.batch_size == 64
  assert config.policy_layer_sizes == (8, 8)  # lists become tuples
  assert config.bootstrap_aggregate == 'max'


def test_unknown_preset_lists_valid_ones():
  with pytest.raises(ConfigError) as err:
    config_lib.make_config('nope')
  message = str(err.value)
  assert "'nope'" in message
  for preset in config_lib.PRESETS:
    assert preset in message


def test_unknown_override_field_lists_valid_ones():
  with pytest.raises(ConfigError) as err:
    config_lib.make_config('acme', batchsize=3)
  assert 'batchsize' in str(err.value)
  assert 'batch_size' in str(err.value)


def test_config_error_is_value_error():
  assert issubclass(ConfigError, ValueError)


def test_frozen_and_replace():
  config = config_lib.make_config('small')
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.batch_size = 3  # type: ignore[misc]
  assert config.replace(batch_size=3).batch_size == 3
  with pytest.raises(ConfigError, match='batch_size'):
    config.replace(batch_size=0)


def test_to_dict_round_trips():
  config = config_lib.make_config('paper')
  assert config_lib.WPOConfig(**config.to_dict()) == config


BAD_VALUES = [
    ('policy_learning_rate', -1e-4),
    ('policy_learning_rate', 0.0),
    ('critic_learning_rate', -3e-4),
    ('discount', 1.0),
    ('discount', -0.1),
    ('adam_b1', 1.0),
    ('adam_b2', 1.5),
    ('policy_family', 'beta'),
    ('bootstrap_aggregate', 'median'),
    ('dq_da_squash', 'tanh'),
    ('kl_constraint', 'medium'),
    ('rate_limiter', 'none'),
    ('policy_layer_sizes', ()),
    ('critic_layer_sizes', ()),
    ('policy_layer_sizes', (256, 0)),
    ('critic_layer_sizes', (-4,)),
    ('num_action_samples', 0),
    ('n_step', 0),
    ('target_update_period', 0),
    ('batch_size', 0),
    ('batch_size', 2.5),
    ('batch_size', True),
    ('sgd_steps_per_learner_step', 0),
    ('num_components', 0),
    ('min_replay_size', 0),
    ('max_replay_size', 0),
    ('prefetch_size', 0),
    ('variable_update_period', 0),
    ('samples_per_insert', 0.0),
    ('init_scale', 0.0),
    ('epsilon_mean', -0.01),
    ('epsilon_stddev', 0.0),
    ('min_scale', -1e-6),
    ('weight_decay', -0.1),
    ('dual_learning_rate', -1.0),
    ('discount', float('nan')),
    ('policy_learning_rate', float('nan')),
]


@pytest.mark.parametrize('field,value', BAD_VALUES,
                         ids=[f'{f}={v!r}' for f, v in BAD_VALUES])
def test_validation_names_field_and_value(field, value):
  with pytest.raises(ConfigError) as err:
    config_lib.make_config('acme', **{field: value})
  message = str(err.value)
  assert field in message
  assert repr(value) in message or str(value) in message


def test_min_replay_above_max_replay():
  with pytest.raises(ConfigError) as err:
    config_lib.make_config('acme', min_replay_size=2000, max_replay_size=1000)
  message = str(err.value)
  assert 'min_replay_size' in message and 'max_replay_size' in message
  assert '2000' in message and '1000' in message
  # Equal sizes are fine.
  config_lib.make_config('acme', min_replay_size=1000, max_replay_size=1000)


def test_action_samples_per_chunk_must_divide_n():
  with pytest.raises(ConfigError) as err:
    config_lib.make_config('acme', num_action_samples=20,
                           action_samples_per_chunk=3)
  message = str(err.value)
  assert 'action_samples_per_chunk=3' in message
  assert '[1, 2, 4, 5, 10, 20]' in message  # the allowed divisors
  with pytest.raises(ConfigError, match='action_samples_per_chunk'):
    config_lib.make_config('acme', action_samples_per_chunk=-1)
  config_lib.make_config('acme', num_action_samples=20,
                         action_samples_per_chunk=5)


def test_auto_chunk_resolves_per_backend():
  from wpo_agent import learning  # pylint: disable=g-import-not-at-top
  cfg = config_lib.make_config('acme')  # N = 20, auto
  assert learning.resolve_samples_per_chunk(cfg, 'cpu') == 4
  assert learning.resolve_samples_per_chunk(cfg, 'gpu') == 20
  cfg = config_lib.make_config('acme', num_action_samples=7)
  assert learning.resolve_samples_per_chunk(cfg, 'cpu') == 1  # 7 is prime
  cfg = config_lib.make_config('acme', num_action_samples=9)
  assert learning.resolve_samples_per_chunk(cfg, 'cpu') == 3
  cfg = config_lib.make_config('acme', action_samples_per_chunk=10)
  assert learning.resolve_samples_per_chunk(cfg, 'cpu') == 10


def test_boundary_values_accepted():
  config_lib.make_config('acme', discount=0.0, min_scale=0.0, weight_decay=0.0,
                         dual_learning_rate=0.0, adam_b1=0.0)


@pytest.mark.parametrize('text,expected', [
    ('batch_size=128', ('batch_size', 128)),
    ('max_replay_size=1e6', ('max_replay_size', 1_000_000)),
    (' batch_size = 64 ', ('batch_size', 64)),
    ('discount=0.95', ('discount', 0.95)),
    ('policy_learning_rate=1e-4', ('policy_learning_rate', 1e-4)),
    ('samples_per_insert=32', ('samples_per_insert', 32.0)),
    ('use_natural_gradient=false', ('use_natural_gradient', False)),
    ('use_natural_gradient=True', ('use_natural_gradient', True)),
    ('policy_loss_on_next_obs=1', ('policy_loss_on_next_obs', True)),
    ('policy_loss_on_next_obs=no', ('policy_loss_on_next_obs', False)),
    ('policy_layer_sizes=256,256,128', ('policy_layer_sizes', (256, 256, 128))),
    ('critic_layer_sizes=(64,32)', ('critic_layer_sizes', (64, 32))),
    ('critic_layer_sizes=[16]', ('critic_layer_sizes', (16,))),
    ('bootstrap_aggregate=max', ('bootstrap_aggregate', 'max')),
    ('policy_family=mixture', ('policy_family', 'mixture')),
])
def test_parse_override_types(text, expected):
  name, value = config_lib.parse_override(text)
  assert (name, value) == expected
  assert type(value) is type(expected[1])  # pylint: disable=unidiomatic-typecheck
  # Parsed values are accepted by the config.
  config_lib.make_config('acme', **{name: value})


@pytest.mark.parametrize('text,fragments', [
    ('batchsize=3', ['batchsize', 'batch_size']),  # unknown field lists valid
    ('batch_size', ['FIELD=VALUE']),
    ('batch_size=abc', ['batch_size', "'abc'", 'int']),
    ('batch_size=1.5', ['batch_size', "'1.5'"]),
    ('discount=high', ['discount', "'high'", 'float']),
    ('use_natural_gradient=maybe', ['use_natural_gradient', "'maybe'"]),
    ('policy_layer_sizes=64,x', ['policy_layer_sizes', "'64,x'"]),
])
def test_parse_override_rejects(text, fragments):
  with pytest.raises(ConfigError) as err:
    config_lib.parse_override(text)
  for fragment in fragments:
    assert fragment in str(err.value)


def test_parsed_but_invalid_value_rejected_by_config():
  name, value = config_lib.parse_override('bootstrap_aggregate=median')
  with pytest.raises(ConfigError, match='bootstrap_aggregate'):
    config_lib.make_config('acme', **{name: value})
  name, value = config_lib.parse_override('policy_layer_sizes=')
  with pytest.raises(ConfigError, match='policy_layer_sizes'):
    config_lib.make_config('acme', **{name: value})
