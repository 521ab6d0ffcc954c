"""Where and when a run or a benchmark ran: CPU model and features, library versions, commit."""

import datetime
import importlib.metadata
import os
import platform
import subprocess

# The features that decide which kernels a framework can use on an x86 CPU.
CPU_FEATURES = ('amx_tile', 'amx_bf16', 'avx512_bf16', 'avx512f', 'avx2', 'fma')
LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'keras', 'tensorflow-cpu', 'tensorflow', 'torch')


def cpu() -> dict:
  """The CPU's model name, family/model, relevant flags and the cores this process may use."""
  fields = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if not line.strip():
          break  # the first processor's block says it all
        key, _, value = line.partition(':')
        fields[key.strip()] = value.strip()
  except OSError:
    pass  # not Linux: the model name from platform is all there is
  flags = set(fields.get('flags', '').split())
  return {
    'cpu_model': fields.get('model name') or platform.processor() or platform.machine(),
    # A VM may hide the full name ('AMD EPYC'); family and model still tell the generation.
    'cpu_family_model': f'{fields.get("cpu family", "?")}/{fields.get("model", "?")}',
    'cpu_features': [name for name in CPU_FEATURES if name in flags],
    'cpu_cores': len(os.sched_getaffinity(0))
    if hasattr(os, 'sched_getaffinity')
    else os.cpu_count(),
  }


def feature_label(features) -> str:
  """The one feature that matters most for bf16 and matmuls: 'AMX', 'AVX-512-BF16', ..."""
  for flag, label in (('amx_bf16', 'AMX'), ('avx512_bf16', 'AVX-512-BF16'), ('avx512f', 'AVX-512'),
                      ('avx2', 'AVX2')):  # fmt: skip
    if flag in features:
      return label
  return 'no AVX2'


def versions() -> dict:
  """Installed versions of the libraries a benchmark may compare (absent ones left out)."""
  found = {}
  for name in LIBRARIES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return found


def commit() -> str:
  """The git commit of this checkout ('+dirty' if it has uncommitted changes), or ''."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=here, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=here,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
  except (OSError, subprocess.CalledProcessError):
    return ''
  return head + ('+dirty' if dirty else '')


def describe() -> dict:
  """Everything a benchmark record carries about where and when it was made."""
  return {
    'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
    'commit': commit(),
    'host': platform.node(),
    **cpu(),
    'versions': versions(),
  }
