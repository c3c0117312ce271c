"""What every test shares: a persistent XLA compilation cache.

Many tests build a learner of the same sizes and compile the same step, in this
process and in the runs they launch (which inherit the environment). JAX's
persistent cache keys each compiled program by its HLO, the JAX version and the
flags, so a hit is the same program; it only skips compiling it again. It lives
in `.pytest_cache/jax` (kept between local runs; CI starts without one).
Set JAX_COMPILATION_CACHE_DIR yourself to move it, or to '' to turn it off.
"""

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Before anything imports jax: it reads these once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(_ROOT, '.pytest_cache', 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
