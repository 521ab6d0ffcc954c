"""Shared command-line behaviour: user errors are one line on stderr, not a traceback."""

import pathlib
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

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


def parse_flags(argv):
  """absl's flag parsing, for app.run: a bad --config key or a stray argument is one line."""
  try:
    remaining = app.parse_flags_with_usage(argv)  # absl's own errors: a line and a usage hint
  except (AttributeError, KeyError) as e:  # ml_collections on a key the config lacks
    text = str(e).replace('\\n', ' ').replace('\\', '')
    key = re.search(r"'([A-Za-z0-9_.]+)'", text)
    guess = re.search(r'Did you mean "([^"]+)"', text)
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    culprit = [o for o in overrides if key and o.split('.')[-1] == key.group(1)]
    print(
      f'error: {(culprit or overrides or ["a --config override"])[0]} names no config key'
      + (f'; did you mean {guess.group(1)!r}?' if guess else '')
      + ' (new keys, e.g. augmentations, belong in the experiment file)',
      file=sys.stderr,
    )
    sys.exit(2)
  if len(remaining) > 1:  # every command here takes flags only
    print(
      f'error: unexpected arguments: {" ".join(remaining[1:])}; flags take the form --name=value',
      file=sys.stderr,
    )
    sys.exit(2)
  if 'config' in flags.FLAGS and flags.FLAGS['config'].present:
    path = config_flags.get_config_filename(flags.FLAGS['config'])
    if not pathlib.Path(path).is_file():  # ml_collections would fail later, with a traceback
      print(f'error: no config file {path}; experiments are in experiments/*.py', file=sys.stderr)
      sys.exit(2)
  return remaining
