"""Shared command-line behaviour: user errors are one line on stderr, not a traceback."""

import sys

from absl import flags, logging

from dnn_jax.errors import UserError

flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors too.')


def run_reporting_errors(fn, *args, **kwargs):
  """Calls fn; a UserError exits 2 with `error: <message>` (traceback only with --verbose)."""
  if not flags.FLAGS.verbose:
    # Libraries log routine facts at INFO (no TPU found, dataset info loaded): keep the
    # console to the Keras-style lines.
    logging.set_verbosity(logging.WARNING)
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    if flags.FLAGS.is_parsed() and flags.FLAGS.verbose:
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
