"""What every test shares: a persistent XLA compilation cache, and (under
pytest-xdist, `make test`) one worker for the tests that launch programs.

Many tests build a learner of the same sizes and compile the same step, in this
process and in the runs they launch (which inherit the environment). JAX's
persistent cache keys each compiled program by its HLO, the JAX version and the
flags, so a hit is the same program; it only skips compiling it again. It lives
in `.pytest_cache/jax` (kept between local runs; CI starts without one).
Set JAX_COMPILATION_CACHE_DIR yourself to move it, or to '' to turn it off.
"""

import os

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Before anything imports jax: it reads these once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(_ROOT, '.pytest_cache', 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


# Tests that launch whole multi-process programs (7-14 processes each). Under
# `pytest -n 2` (make test) they all go to one worker, one after another: two
# at once on a 2-core machine would starve both and their stop deadlines.
_PROGRAM_FILES = ('tests/test_distributed.py',
                  'tests/test_multihost_programs.py',
                  'tests/test_baselines_programs.py',
                  'tests/test_replicas_programs.py')


@pytest.hookimpl(optionalhook=True)  # `-p no:xdist` runs without it
def pytest_xdist_make_scheduler(config, log):
  """Load balancing, except that the program files form one unit of work.

  (xdist's own `--dist loadgroup` marks do not take with pytest 9, whose
  node ids xdist 3.8 cannot rename; its scheduler API is what is used here.)
  """
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class ProgramsTogether(LoadScopeScheduling):

    def _split_scope(self, nodeid):
      path = nodeid.split('::', 1)[0]
      return 'programs' if path in _PROGRAM_FILES else nodeid

  return ProgramsTogether(config, log)
