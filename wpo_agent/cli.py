"""What the launch scripts share: absl flag parsing that fails in one line."""

import sys

from absl import flags


def parse_flags(argv):
  """absl's parser, but a bad flag is one `error:` line and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
