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
    _choice('policy_family', self.policy_family, networks.POLICY_FAMILIES)
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
                 'samples_per_insert', 'epsilon_mean', 'epsilon_stddev'):
      if not getattr(self, name) > 0:
        raise ConfigError(f'{name}={getattr(self, name)!r}: must be > 0')
    for name in ('min_scale', 'weight_decay', 'dual_learning_rate'):
      if not getattr(self, name) >= 0:
        raise ConfigError(f'{name}={getattr(self, name)!r}: must be >= 0')
    for name in ('discount', 'adam_b1', 'adam_b2'):
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
        'num_components', 'init_scale', 'min_scale')}

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


def make_config(preset: str = 'acme', **overrides) -> WPOConfig:
  """The named preset with `overrides` applied; unknown names list the valid ones."""
  if preset not in PRESETS:
    raise ConfigError(f'unknown config preset {preset!r}; valid presets: '
                      f'{sorted(PRESETS)}')
  fields = {f.name for f in dataclasses.fields(WPOConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ConfigError(f'unknown config field(s) {unknown}; valid fields: '
                      f'{sorted(fields)}')
  return WPOConfig(**{**PRESETS[preset], **overrides})


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
