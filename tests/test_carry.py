"""benchmarks.carry: a file cut into parts comes back whole and checked, or not at all."""

import os

import pytest

from benchmarks import carry


def test_parts_join_back_into_the_same_bytes(tmp_path):
  original = os.urandom(700_000)
  path = tmp_path / 'data.tar'
  path.write_bytes(original)
  parts = carry.split(path, 300_000)
  assert [p.stat().st_size for p in parts] == [300_000, 300_000, 100_000]
  path.unlink()  # as on the other machine: only the parts and the manifest arrive
  assert carry.join(path).read_bytes() == original
  assert not (tmp_path / 'data.tar.joining').exists()


def test_a_missing_or_damaged_part_is_one_line_and_leaves_nothing(tmp_path):
  path = tmp_path / 'data.tar'
  path.write_bytes(os.urandom(500_000))
  parts = carry.split(path, 200_000)
  path.unlink()
  parts[1].rename(tmp_path / 'elsewhere')
  with pytest.raises(ValueError, match=r'part-01 of 3 not here yet'):
    carry.join(path)
  (tmp_path / 'elsewhere').rename(parts[1])
  damaged = bytearray(parts[2].read_bytes())
  damaged[7] ^= 1
  parts[2].write_bytes(bytes(damaged))
  with pytest.raises(ValueError, match='do not match'):
    carry.join(path)
  assert not path.exists() and not (tmp_path / 'data.tar.joining').exists()


def test_the_command_says_what_is_missing_in_one_line(tmp_path, capsys):
  assert carry.main(['carry', 'join', str(tmp_path / 'none.tar')]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: no ') and '\n' not in err
