"""Shared command-line behaviour: user errors are one line on stderr, not a traceback."""

import pathlib
import re
import sys
import traceback

import ml_collections
from absl import flags, logging
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


def parse_flags(argv, positional: bool = False):
  """absl's flag parsing, for app.run: a bad --config file, key or stray argument is one line.

  positional: keep the arguments that are not flags (dnn_jax.predict's files), in argv[1:] of
  main, instead of refusing them; e.g. flags_parser=functools.partial(parse_flags,
  positional=True).
  """
  try:
    remaining = flags.FLAGS(argv)
  except Exception as e:
    problem = config_file_problem(e, _config_file_argument(argv))
    if problem:
      _exit_with(problem)
    if isinstance(e, flags.Error):  # absl's own: its line and a usage hint, as app.run says
      print(f'FATAL Flags parsing error: {e}', file=sys.stderr)
      print('Pass --helpshort or --helpfull to see help on flags.', file=sys.stderr)
      sys.exit(1)
    if not isinstance(e, AttributeError | KeyError):
      raise
    _exit_with(_unknown_override(e, argv))  # ml_collections on a key the config lacks
  if len(remaining) > 1 and not positional:  # the other commands take flags only
    _exit_with(f'unexpected arguments: {" ".join(remaining[1:])}; flags take the form --name=value')
  if 'config' in flags.FLAGS and flags.FLAGS['config'].present:
    path = config_flags.get_config_filename(flags.FLAGS['config'])
    if not pathlib.Path(path).is_file():  # ml_collections would fail later, with a traceback
      _exit_with(f'no config file {path}; experiments are in experiments/*.py')
    config = flags.FLAGS.config
    if not isinstance(config, ml_collections.ConfigDict):
      _exit_with(
        f'{path}: get_config() returned {type(config).__name__}, not an '
        f'ml_collections.ConfigDict; start it from experiments/base.py'
      )
  return remaining


def config_file_problem(error: BaseException, path: str | None) -> str | None:
  """`file:line: problem` when error came from the config file's code, else None."""
  if not path:
    return None
  if not pathlib.Path(path).is_file():
    return f'no config file {path}; experiments are in experiments/*.py'
  # absl and ml_collections re-raise the file's ValueError/TypeError as their own: the first
  # error raised is the one to name.
  chain = [error]
  while (inner := chain[-1].__cause__ or chain[-1].__context__) and inner not in chain:
    chain.append(inner)
  for cause in reversed(chain):
    if isinstance(cause, SyntaxError):  # IndentationError too: in the file or one it imports
      return f'{cause.filename or path}:{cause.lineno}: {type(cause).__name__}: {cause.msg}'
    line = _deepest_user_line(cause, path)
    if line:
      detail = (str(cause).splitlines() or [''])[0]
      return f'{line}: {type(cause).__name__}: {detail}'
  if isinstance(error, AttributeError) and error.name == 'get_config':
    return f'{path} defines no get_config(); an experiment file returns its ConfigDict from one'
  return None  # not the file's own code: an override, say


def _deepest_user_line(error: BaseException, path: str) -> str | None:
  """`file:line` of the deepest user code under the config file's frames, if it ran."""
  frames = traceback.extract_tb(error.__traceback__)
  target = pathlib.Path(path).resolve()
  ran = [i for i, f in enumerate(frames) if pathlib.Path(f.filename).resolve() == target]
  if not ran:
    return None
  # The file's own line, or one in a file it imports (experiments/base.py, say).
  line = [f for f in frames[ran[0] :] if not _is_library(f.filename)][-1]
  where = f'{line.filename}:{line.lineno}'
  return where if pathlib.Path(line.filename).resolve() == target else f'{where} (loading {path})'


def _is_library(filename: str) -> bool:
  """Whether a traceback's file is Python's or an installed package's, not the user's."""
  if filename.startswith('<'):  # <frozen importlib._bootstrap> and the like
    return True
  prefixes = {pathlib.Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
  return any(pathlib.Path(filename).resolve().is_relative_to(p) for p in prefixes)


def _config_file_argument(argv) -> str | None:
  """The --config flag's file, without ml_collections's ':argument' suffix."""
  for i, arg in enumerate(argv[1:], start=1):
    value = None
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
    if value is not None:
      return value.split(':', 1)[0]
  return None


def _unknown_override(error: BaseException, argv) -> str:
  text = str(error).replace('\\n', ' ').replace('\\', '')
  key = re.search(r"'([A-Za-z0-9_.]+)'", text)
  guess = re.search(r'Did you mean "([^"]+)"', text)
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  culprit = [o for o in overrides if key and o.split('.')[-1] == key.group(1)]
  return (
    f'{(culprit or overrides or ["a --config override"])[0]} names no config key'
    + (f'; did you mean {guess.group(1)!r}?' if guess else '')
    + ' (new keys, e.g. augmentations, belong in the experiment file)'
  )


def _exit_with(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)
