"""Moves a file bigger than one transfer in parts: split here, reassembled and checksummed there.

The device tool carries at most 64 MiB per call, and a warm GPU machine keeps what earlier
calls left in ignored paths, so a big file travels as parts, one call each, then is joined:

  python -m benchmarks.carry split FILE --part_mb 45   # FILE.part-00, -01, ... and FILE.sha256
  python -m benchmarks.carry join FILE                 # FILE from its parts, checked, or one line

`join` refuses (exit 2, one line naming what is missing or wrong) unless every part is there
and the joined bytes have the recorded SHA-256; nothing half-joined is left behind.
"""

import hashlib
import pathlib
import sys

CHUNK = 1 << 20


def part_paths(path) -> list:
  """The parts of path that exist, in order."""
  path = pathlib.Path(path)
  return sorted(path.parent.glob(f'{path.name}.part-*'))


def split(path, part_bytes: int) -> list:
  """Writes path's parts of at most part_bytes and path.sha256 (digest, size, part count)."""
  path = pathlib.Path(path)
  for old in part_paths(path):
    old.unlink()
  digest, parts, size = hashlib.sha256(), [], 0
  with open(path, 'rb') as f:
    while True:
      block = f.read(part_bytes)
      if not block:
        break
      digest.update(block)
      size += len(block)
      part = path.with_name(f'{path.name}.part-{len(parts):02d}')
      part.write_bytes(block)
      parts.append(part)
  path.with_name(path.name + '.sha256').write_text(f'{digest.hexdigest()} {size} {len(parts)}\n')
  return parts


def join(path) -> pathlib.Path:
  """Joins path's parts into path after checking them all; ValueError says what is wrong."""
  path = pathlib.Path(path)
  manifest = path.with_name(path.name + '.sha256')
  if not manifest.is_file():
    raise ValueError(f'no {manifest}: carry it with the first part (split writes it)')
  want, size, count = manifest.read_text().split()
  parts = part_paths(path)
  missing = [f'part-{i:02d}' for i in range(int(count)) if path.name + f'.part-{i:02d}' not in
             {p.name for p in parts}]  # fmt: skip
  if missing:
    raise ValueError(f'{path}: {", ".join(missing)} of {count} not here yet; carry them first')
  partial = path.with_name(path.name + '.joining')
  digest = hashlib.sha256()
  with open(partial, 'wb') as out:
    for part in parts[: int(count)]:
      with open(part, 'rb') as f:
        while block := f.read(CHUNK):
          digest.update(block)
          out.write(block)
  if digest.hexdigest() != want or partial.stat().st_size != int(size):
    partial.unlink()
    raise ValueError(f'{path}: the joined parts do not match {manifest}; carry them again')
  partial.rename(path)
  return path


def main(argv) -> int:
  usage = 'usage: python -m benchmarks.carry split FILE [--part_mb N] | join FILE'
  if len(argv) < 3 or argv[1] not in ('split', 'join'):
    print(usage, file=sys.stderr)
    return 2
  try:
    if argv[1] == 'split':
      part_mb = float(argv[argv.index('--part_mb') + 1]) if '--part_mb' in argv else 45.0
      parts = split(argv[2], int(part_mb * (1 << 20)))
      print(f'{argv[2]}: {len(parts)} part(s) of at most {part_mb:g} MiB, and its .sha256')
    else:
      print(f'joined and checked {join(argv[2])}')
  except (OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
