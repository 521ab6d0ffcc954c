"""Which pipeline a run uses: the splits on every device when they fit its budget, else grain."""

import math
import os

import jax

from dnn_jax.data import catalog
from dnn_jax.errors import ConfigError

MB = 10**6  # config.data.device_budget_mb's unit
DEFAULT_FRACTION = 4  # with no budget set, the splits may take 1/4 of a device's memory
# A streamed call holds at most this much input, so its batches, the next call's being read,
# and the model fit beside each other on a device.
STREAM_CALL_BYTES = 64 << 20


def example_bytes(name: str) -> int:
  """Bytes one example takes on the device: its uint8 image and int32 label."""
  return math.prod(catalog.get(name).image_shape) + 4


def resident_bytes(data_config, sizes: dict) -> int:
  """Bytes the device pipeline puts on each device: every split it evaluates or trains on."""
  splits = ['train', 'test'] if data_config.validation_split == data_config.test_split else sizes
  return sum(sizes[k] for k in splits) * example_bytes(data_config.name)


def device_memory(device) -> tuple[int, str]:
  """(bytes, what they are) of a device's memory; a CPU device's is the host's RAM."""
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']), f'{device.device_kind} memory'
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'), 'host memory'


def sizes(data_config) -> dict | None:
  """{'train', 'validation', 'test'}: the example count of each split, None if not sizable here."""
  specs = {k: data_config[f'{k}_split'] for k in ('train', 'validation', 'test')}
  counts = {k: catalog.split_size(data_config.name, spec) for k, spec in specs.items()}
  return None if None in counts.values() else counts


def choose(data_config, sizes: dict, device=None) -> tuple[str, str]:
  """('device' or 'grain', a line saying why) for config.data.pipeline and the split sizes.

  Raises ConfigError when 'device' is asked for and the splits exceed a budget that was set.
  """
  wanted, budget_mb = data_config.pipeline, data_config.device_budget_mb
  if wanted == 'grain':
    return 'grain', 'Data pipeline: grain (config.data.pipeline), streamed from the files'
  if wanted == 'device' and not budget_mb:
    return 'device', ''
  needed = resident_bytes(data_config, sizes)
  if budget_mb:
    budget, what = budget_mb * MB, f'config.data.device_budget_mb={budget_mb}'
  else:
    memory, kind = device_memory(device or jax.devices()[0])
    budget, what = memory // DEFAULT_FRACTION, f'1/{DEFAULT_FRACTION} of the {kind}'
  fits = needed <= budget
  sizes_line = f'the splits take {needed / MB:,.1f} MB, the budget is {budget / MB:,.0f} MB'
  if wanted == 'device':
    if not fits:
      raise ConfigError(
        f'config.data.pipeline=device, but {sizes_line} ({what}); stream them with '
        f'--config.data.pipeline=grain (or auto), or raise the budget'
      )
    return 'device', ''
  if fits:
    return 'device', f'Data pipeline: device ({sizes_line}: {what})'
  return 'grain', f'Data pipeline: grain, streaming ({sizes_line}: {what})'
