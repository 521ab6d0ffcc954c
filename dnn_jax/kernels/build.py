"""Builds the oneDNN convolution kernels: `python -m dnn_jax.kernels.build [--force]`.

Optional: without a C++ compiler or oneDNN (pip install onednn-cpu-gomp==2023.2.0
onednn-devel-cpu-gomp==2023.2.0) it prints one line and exits 0, and dnn_jax uses XLA's
convolutions. A compile error is a bug in onednn_conv.cc: it exits 1.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

from dnn_jax import files

SOURCE = pathlib.Path(__file__).with_name('onednn_conv.cc')
LIBRARY = pathlib.Path(__file__).with_name('_build') / 'libdnn_jax_onednn.so'
WHEELS = 'onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0'
FALLBACK = "dnn_jax will use XLA's convolutions"


class _CompileFailed(Exception):
  """The compiler's output, when it fails."""


def onednn_prefix() -> pathlib.Path:
  """Where the oneDNN wheels put include/ and lib/: the environment's data prefix."""
  return pathlib.Path(sysconfig.get_paths()['data'])


def missing(compiler: str) -> str | None:
  """What the build lacks, as the start of one line, or None when it has everything."""
  prefix = onednn_prefix()
  if shutil.which(compiler) is None:
    return f'no C++ compiler {compiler!r} on PATH (install g++ or set CXX)'
  if not (prefix / 'include' / 'oneapi' / 'dnnl' / 'dnnl.hpp').exists():
    return f'no oneDNN headers under {prefix}/include (pip install {WHEELS})'
  if not (prefix / 'lib' / 'libdnnl.so').exists():
    return f'no oneDNN library {prefix}/lib/libdnnl.so (pip install {WHEELS})'
  return None


def command(compiler: str, output: pathlib.Path) -> list[str]:
  """The compile-and-link command line, with an rpath so the library finds libdnnl."""
  import jax  # here, not at import: the missing-compiler path needs no JAX

  lib = onednn_prefix() / 'lib'
  return [
    compiler, '-O2', '-std=c++17', '-shared', '-fPIC', '-Wall',
    # -isystem: warnings in our source only, not in XLA's and oneDNN's headers
    '-isystem', jax.ffi.include_dir(), '-isystem', str(onednn_prefix() / 'include'),
    str(SOURCE), '-o', str(output), f'-L{lib}', '-ldnnl', f'-Wl,-rpath,{lib}',
  ]  # fmt: skip


def build(output: pathlib.Path = LIBRARY, force: bool = False) -> int:
  """Compiles SOURCE into output unless it is up to date; the exit status for main()."""
  if not force and output.exists() and output.stat().st_mtime >= SOURCE.stat().st_mtime:
    print(f'dnn_jax: oneDNN kernels up to date: {output}')
    return 0
  compiler = os.environ.get('CXX', 'g++')
  lack = missing(compiler)
  if lack is not None:
    print(f'dnn_jax: {lack}; skipped the oneDNN kernels, {FALLBACK}')
    return 0
  output.parent.mkdir(parents=True, exist_ok=True)
  try:
    # Built under a temporary name and renamed when complete: a failed or interrupted build
    # never leaves a half-written library where the loader looks.
    with files.atomic_path(output) as partial:
      result = subprocess.run(command(compiler, partial), capture_output=True, text=True)
      if result.returncode != 0:
        raise _CompileFailed(result.stdout + result.stderr)
  except _CompileFailed as failed:
    sys.stderr.write(str(failed))
    print(f'dnn_jax: compiling {SOURCE.name} failed (above); {FALLBACK}', file=sys.stderr)
    return 1
  print(f'dnn_jax: built {output}')
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--force', action='store_true', help='rebuild even when up to date')
  parser.add_argument('--output', type=pathlib.Path, default=LIBRARY, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  return build(args.output, args.force)


if __name__ == '__main__':
  sys.exit(main())
