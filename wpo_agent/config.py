"""WPO configuration: one typed dataclass, validated on construction, plus presets.

Defaults and what they follow: docs/algorithm.md Secs. 4-8.
Presets: `acme` (Acme's examples/baselines/rl_continuous/run_wpo.py) and `paper`
(what the WPO paper reports for the Control Suite); BUILD_NOTES.md lists their
differences.
"""

import dataclasses
import typing
from typing import Any, Dict, Mapping, Tuple

from wpo_agent import losses
from wpo_agent import networks
from wpo_agent import ratio

# Values of replay_backend: device_replay.py (a buffer on the learner's
# devices, sampled inside its step) and replay.py (a reverb table). The first
# is the default on every platform (BUILD_NOTES.md, "Device replay": measured
# on CPU, and the only one that feeds an accelerator learner).
REPLAY_BACKENDS = ('device', 'reverb')


class ConfigError(ValueError):
  """A config field has a value outside what is allowed."""


@dataclasses.dataclass(frozen=True)
class WPOConfig:
  """Every hyperparameter of the agent, threaded from here exactly once."""

  # The policy-improvement step: 'wpo', or a baseline of the paper ('mpo',
  # 'ddpg', 'sac') on the same networks' torsos, critic, replay and actors
  # (docs/algorithm.md Sec. 10). make_config applies the algorithm's own
  # values (ALGORITHM_DEFAULTS, ACME_EXAMPLES).
  algorithm: str = 'wpo'

  # --- networks (docs/algorithm.md Sec. 7) ---
  policy_family: str = 'gaussian'  # 'gaussian' or 'mixture' (K diagonal Gaussians)
  num_components: int = 5  # K, mixture only
  policy_layer_sizes: Tuple[int, ...] = (256, 256, 256)
  critic_layer_sizes: Tuple[int, ...] = (512, 512, 256)
  init_scale: float = 0.5  # policy sigma at initialisation
  min_scale: float = 1e-6  # floor on policy sigma

  # --- WPO policy loss (Secs. 2-3) ---
  num_action_samples: int = 20  # N: samples per state for the WPO loss and the bootstrap
  use_natural_gradient: bool = True  # inverse-Fisher (sigma^2) scaling of the WPO term
  dq_da_squash: str = 'identity'  # 'identity' or 'cbrt' applied to grad_a Q
  policy_loss_on_next_obs: bool = False  # Acme also applies the policy loss at s_{t+n}
  # Speed only, same result: grad_a Q is computed over this many of the N samples
  # at a time (lax.map), which keeps the critic's activations in cache on a CPU.
  # 0 = auto: the largest divisor of N that is <= 4 on CPU, all N on GPU/TPU.
  action_samples_per_chunk: int = 0

  # --- KL regulariser (Sec. 4) ---
  kl_constraint: str = 'soft'  # 'soft': frozen duals; 'hard': duals learned with Adam
  epsilon_mean: float = 0.01  # KL bound on the mean (hard) / only logged (soft)
  epsilon_stddev: float = 1e-6  # KL bound on the stddev
  init_log_alpha_mean: float = 0.0  # alpha = softplus(log_alpha): 0 -> 0.693
  init_log_alpha_stddev: float = 10000.0  # softplus(1e4) ~ 1e4
  dual_learning_rate: float = 1e-2  # Adam lr of the log-alphas (hard only)

  # --- critic (Secs. 5-6) ---
  discount: float = 0.99  # gamma per environment step
  n_step: int = 5  # n-step transitions
  bootstrap_aggregate: str = 'mean'  # 'mean' (Acme) or 'max' (paper) over N target samples
  target_update_period: int = 100  # SGD steps between hard target copies

  # --- the baselines (Sec. 10; unused by WPO) ---
  mpo_epsilon: float = 0.1  # MPO: KL bound of the E-step (its temperature dual)
  init_log_temperature: float = 10.0  # MPO: temperature = softplus(this)
  exploration_stddev: float = 0.2  # DDPG: the actors' Gaussian noise
  dqda_clipping: float = 1.0  # DDPG: L2 clip of dQ/da per example; 0 = none
  target_entropy_per_dim: float = -1.0  # SAC: target entropy = this x D
  init_log_entropy_alpha: float = 0.0  # SAC: entropy alpha = exp(this)
  # Target networks: 0 = the hard copy every target_update_period steps;
  # tau > 0 = Polyak averaging every step, target += tau (online - target).
  target_update_tau: float = 0.0
  grad_norm_clip: float = 0.0  # policy and critic gradients; 0 = none

  # --- optimiser (Sec. 8) ---
  policy_learning_rate: float = 3e-4
  critic_learning_rate: float = 3e-4
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  weight_decay: float = 0.0  # AdamW decoupled weight decay; 0 = plain Adam

  # --- data (Sec. 8) ---
  batch_size: int = 256
  sgd_steps_per_learner_step: int = 1  # K SGD steps fused per jitted call (lax.scan)
  max_replay_size: int = 1_000_000
  min_replay_size: int = 1000
  samples_per_insert: float = 64.0  # sampled transitions per inserted transition
  rate_limiter: str = 'sample_to_insert'  # or 'min_size' (no ratio; debugging)
  prefetch_size: int = 4  # batches the learner's dataset prepares ahead (reverb)
  # 'device': a ring buffer on the learner's devices, sampled inside the
  # jitted step; 'reverb': batches sampled from a reverb table on the host
  # (BUILD_NOTES.md, "Device replay", for the measurements behind the default).
  replay_backend: str = 'device'

  # --- actors (Sec. 8) ---
  variable_update_period: int = 1000  # actor steps between parameter refreshes

  def __post_init__(self):
    for name in ('policy_layer_sizes', 'critic_layer_sizes'):
      value = tuple(getattr(self, name))
      object.__setattr__(self, name, value)
      if not value or any(not isinstance(h, int) or h < 1 for h in value):
        raise ConfigError(f'{name}={value!r}: need a non-empty tuple of '
                          'positive ints, e.g. (256, 256, 256)')
    # Each choice's allowed values belong to the module that implements it.
    _choice('algorithm', self.algorithm, networks.ALGORITHMS)
    _choice('policy_family', self.policy_family, networks.POLICY_FAMILIES)
    if (self.algorithm in networks.GAUSSIAN_ONLY and
        self.policy_family != 'gaussian'):
      raise ConfigError(networks.gaussian_only_error(self.algorithm,
                                                     self.policy_family))
    _choice('bootstrap_aggregate', self.bootstrap_aggregate, losses.AGGREGATES)
    _choice('dq_da_squash', self.dq_da_squash, losses.SQUASHES)
    _choice('kl_constraint', self.kl_constraint, losses.KL_CONSTRAINTS)
    _choice('rate_limiter', self.rate_limiter, ratio.RATE_LIMITERS)
    _choice('replay_backend', self.replay_backend, REPLAY_BACKENDS)
    for name in ('num_components', 'num_action_samples', 'n_step',
                 'target_update_period', 'batch_size',
                 'sgd_steps_per_learner_step', 'max_replay_size',
                 'min_replay_size', 'prefetch_size', 'variable_update_period'):
      _at_least(name, getattr(self, name), 1)
    for name in ('init_scale', 'policy_learning_rate', 'critic_learning_rate',
                 'samples_per_insert', 'epsilon_mean', 'epsilon_stddev',
                 'mpo_epsilon'):
      if not getattr(self, name) > 0:
        raise ConfigError(f'{name}={getattr(self, name)!r}: must be > 0')
    for name in ('min_scale', 'weight_decay', 'dual_learning_rate',
                 'exploration_stddev', 'dqda_clipping', 'grad_norm_clip'):
      if not getattr(self, name) >= 0:
        raise ConfigError(f'{name}={getattr(self, name)!r}: must be >= 0')
    for name in ('discount', 'adam_b1', 'adam_b2', 'target_update_tau'):
      if not 0 <= getattr(self, name) < 1:
        raise ConfigError(f'{name}={getattr(self, name)!r}: must be in [0, 1)')
    _at_least('action_samples_per_chunk', self.action_samples_per_chunk, 0)
    chunk, n = self.action_samples_per_chunk, self.num_action_samples
    if chunk and n % chunk:
      divisors = [d for d in range(1, n + 1) if n % d == 0]
      raise ConfigError(
          f'action_samples_per_chunk={chunk} does not divide num_action_samples='
          f'{n}; allowed: 0 (auto) or one of {divisors}')
    if self.min_replay_size > self.max_replay_size:
      raise ConfigError(
          f'min_replay_size={self.min_replay_size} exceeds max_replay_size='
          f'{self.max_replay_size}; need min_replay_size <= max_replay_size')

  def network_kwargs(self) -> Dict[str, Any]:
    """The fields networks.make_networks takes, by name."""
    return {name: getattr(self, name) for name in (
        'policy_layer_sizes', 'critic_layer_sizes', 'policy_family',
        'num_components', 'init_scale', 'min_scale', 'algorithm',
        'exploration_stddev')}

  def replace(self, **overrides) -> 'WPOConfig':
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def _parse_int(raw: str) -> int:
  """int('1000') or integral floats such as '1e6'."""
  try:
    return int(raw)
  except ValueError:
    value = float(raw)
    if not value.is_integer():
      raise
    return int(value)


def _choice(name, value, allowed):
  if value not in allowed:
    raise ConfigError(f'{name}={value!r}: allowed values are {list(allowed)}')


def _at_least(name, value, low):
  if not isinstance(value, int) or isinstance(value, bool) or value < low:
    raise ConfigError(f'{name}={value!r}: must be an integer >= {low}')


PRESETS: Mapping[str, Mapping[str, Any]] = {
    # Acme's run_wpo.py: (256,256,256) for both networks, lr 3e-4, spi 64, mean.
    'acme': dict(critic_layer_sizes=(256, 256, 256)),
    # The paper (Control Suite): max bootstrap, policy (256,256,128), critic
    # (512,512,256), replay 2e6 (sizes and replay size second-hand, unverified).
    'paper': dict(bootstrap_aggregate='max', policy_layer_sizes=(256, 256, 128),
                  critic_layer_sizes=(512, 512, 256), max_replay_size=2_000_000),
    # Small networks and a cheaper data ratio so that a 2-core CPU learns a
    # Control Suite task within minutes (tests, `make run`); not a paper setting.
    'small': dict(policy_layer_sizes=(64, 64), critic_layer_sizes=(128, 128),
                  samples_per_insert=256.0, batch_size=128,
                  num_action_samples=10, target_update_period=50,
                  variable_update_period=250),
}


# Each baseline's own values, with every preset (docs/algorithm.md Sec. 10
# gives the Acme file of each): MPO learns its duals (acme/agents/jax/mpo/
# types.py GaussianPolicyLossConfig, epsilon_mean from run_mpo.py) and clips
# gradients at 40 (mpo/config.py); DDPG's noise and dQ/da clip are D4PG's
# (run_d4pg.py sigma=0.2; d4pg/config.py clipping) and so is the norm clip
# of 40 (d4pg/builder.py); SAC's temperature starts at 1 and learns at 3e-4
# (sac/learning.py), with Polyak tau 0.005 and target entropy -|A|
# (sac/config.py, run_sac.py) and a min stddev of 1e-3 (NormalTanhDistribution).
ALGORITHM_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    'wpo': {},
    'mpo': dict(kl_constraint='hard', epsilon_mean=0.01, epsilon_stddev=1e-6,
                init_log_alpha_mean=10.0, init_log_alpha_stddev=1000.0,
                dual_learning_rate=1e-2, grad_norm_clip=40.0),
    'ddpg': dict(exploration_stddev=0.2, dqda_clipping=1.0,
                 grad_norm_clip=40.0),
    'sac': dict(dual_learning_rate=3e-4, target_update_tau=0.005,
                target_entropy_per_dim=-1.0, min_scale=1e-3),
}
# With the 'acme' preset, also the data and optimiser settings of Acme's own
# example script for the algorithm (examples/baselines/rl_continuous/).
ACME_EXAMPLES: Mapping[str, Mapping[str, Any]] = {
    'wpo': {},
    'mpo': dict(n_step=4, samples_per_insert=64.0, policy_learning_rate=3e-4,
                critic_learning_rate=3e-4),
    'ddpg': dict(n_step=5, samples_per_insert=32.0, policy_learning_rate=3e-4,
                 critic_learning_rate=3e-4),
    'sac': dict(n_step=2, samples_per_insert=256.0, min_replay_size=10_000,
                policy_learning_rate=3e-4, critic_learning_rate=3e-4),
}


def make_config(preset: str = 'acme', **overrides) -> WPOConfig:
  """The named preset, then its algorithm's values (ALGORITHM_DEFAULTS, and
  ACME_EXAMPLES with 'acme'), then `overrides`; unknown names list the valid
  ones."""
  if preset not in PRESETS:
    raise ConfigError(f'unknown config preset {preset!r}; valid presets: '
                      f'{sorted(PRESETS)}')
  fields = {f.name for f in dataclasses.fields(WPOConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ConfigError(f'unknown config field(s) {unknown}; valid fields: '
                      f'{sorted(fields)}')
  algorithm = overrides.get('algorithm', 'wpo')
  if algorithm not in ALGORITHM_DEFAULTS:
    _choice('algorithm', algorithm, networks.ALGORITHMS)
  own = {**ALGORITHM_DEFAULTS[algorithm],
         **(ACME_EXAMPLES[algorithm] if preset == 'acme' else {})}
  return WPOConfig(**{**PRESETS[preset], **own, **overrides})


def parse_override(text: str) -> Tuple[str, Any]:
  """Parses 'FIELD=VALUE' into (field, typed value) using the field's annotation."""
  if '=' not in text:
    raise ConfigError(f'--set {text!r}: expected FIELD=VALUE, e.g. '
                      'batch_size=128')
  name, raw = (s.strip() for s in text.split('=', 1))
  hints = typing.get_type_hints(WPOConfig)
  if name not in hints:
    raise ConfigError(f'--set {text!r}: unknown field {name!r}; valid fields: '
                      f'{sorted(hints)}')
  kind = hints[name]
  try:
    if kind is bool:
      lowered = raw.lower()
      if lowered not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise ValueError(raw)
      value = lowered in ('true', '1', 'yes')
    elif kind is int:
      value = _parse_int(raw)
    elif kind is float:
      value = float(raw)
    elif kind is str:
      value = raw
    else:  # Tuple[int, ...]
      parts = [p for p in raw.strip('()[] ').split(',') if p.strip()]
      value = tuple(int(p) for p in parts)
  except ValueError:
    raise ConfigError(f'--set {text!r}: {raw!r} is not a valid '
                      f'{getattr(kind, "__name__", "tuple of ints")} for '
                      f'{name}') from None
  return name, value
