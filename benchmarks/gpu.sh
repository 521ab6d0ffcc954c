#!/usr/bin/env bash
# Benchmarks for a GPU machine (the `device` tool); they run on any CPU too.
#
#   bash benchmarks/gpu.sh --prepare   # here: fill .gpu_carry/ (wheels and MNIST), ~40 MB,
#                                      # and .gpu_parts/ (CIFAR-10 in parts) where it is prepared
#   bash benchmarks/gpu.sh             # there: install what is missing, benchmark, one table
#
# Carry .gpu_carry (git ignores it) with the device tool's `carry`. The GPU image has jax,
# flax, optax, orbax, chex and numpy, but not ml-collections, dm-pix or tensorflow-datasets:
# the wheels cover the first two, and .gpu_carry/tfds holds the prepared MNIST with its
# decoded arrays, which dnn_jax reads without tensorflow-datasets. CIFAR-10's decoded arrays
# (~140 MB compressed) exceed one call's 64 MiB: --prepare cuts them into .gpu_parts/
# cifar10.tar.part-NN of at most 45 MiB (benchmarks/carry.py) with cifar10.tar.sha256; carry
# the manifest and one part per call, back to back while the machine is warm (it keeps what
# earlier calls left in ignored paths), then run this script, which joins the parts, checks
# the SHA-256 and trains the CIFAR experiments on the real images. Without them (or with
# SYNTHETIC_CIFAR=1) the CIFAR experiments run on synthetic data of its shapes (speed does
# not depend on pixel values): cifar10_cnn in bfloat16 at batch 512 (the issue's 300k
# samples/s target) and in float32 as configured, and ResNet-110 with its epoch time. It runs
# benchmarks.throughput on every experiment and the full 10-epoch MNIST MLP, then prints one
# table. QUICK=1 shrinks everything for a smoke test: one MNIST experiment on real data, the
# bfloat16 CIFAR CNN and ResNet-11 (the smallest) for ResNet-110, each a few steps.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
PY=${PYTHON:-python3}
OUT=${OUT:-${TMPDIR:-/tmp}/dnn_jax_gpu}

if [ "${1:-}" = --prepare ]; then
  rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/tfds"
  $PY -m pip download --quiet --no-deps --dest "$CARRY/wheels" ml-collections dm-pix
  for version in 3.10 3.11 3.12 3.13; do  # PyYAML (for ml-collections) is built per Python
    $PY -m pip download --quiet --no-deps --only-binary=:all: --dest "$CARRY/wheels" \
      --platform manylinux2014_x86_64 --python-version "$version" pyyaml
  done
  $PY - <<'PYTHON'
import pathlib
import shutil

import numpy as np

from dnn_jax.data import locate, splits
from experiments import mnist_mlp

config = mnist_mlp.get_config().data
splits.load(config)  # prepares MNIST and caches its decoded arrays if not done yet
data_dir, _ = splits.ensure_prepared(config)
dst = pathlib.Path('.gpu_carry/tfds')
shutil.copytree(data_dir / 'mnist', dst / 'mnist')
cache = locate.writable_data_dir(config.data_dir) / 'dnn_jax_arrays' / 'mnist'
for npz in cache.rglob('*.npz'):
  if npz.stem in ('train', 'test'):
    target = dst / 'dnn_jax_arrays' / npz.relative_to(cache.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as arrays:  # compressed: np.load reads both forms
      np.savez_compressed(target, **arrays)
PYTHON
  du -sh "$CARRY"
  rm -rf .gpu_parts && mkdir -p .gpu_parts/stage/tfds
  if $PY - <<'PYTHON'
# CIFAR-10's tfds metadata and decoded arrays, where it is prepared (DNN_JAX_DATA_DIRS too).
import pathlib
import shutil
import sys

import numpy as np

from dnn_jax.data import locate, splits
from dnn_jax.errors import DataError
from experiments import cifar10_cnn

config = cifar10_cnn.get_config().data
try:
  data_dir, version = splits.ensure_prepared(config)
except DataError as e:
  print(f'CIFAR-10 is not prepared here ({e}); the GPU runs its experiments on synthetic data')
  sys.exit(1)
splits.load(config)  # decodes train and test once into the array cache
stage = pathlib.Path('.gpu_parts/stage/tfds')
info = data_dir / 'cifar10' / version
(stage / 'cifar10' / version).mkdir(parents=True)
for name in ('dataset_info.json', 'features.json', 'label.labels.txt'):
  if (info / name).is_file():
    shutil.copy(info / name, stage / 'cifar10' / version / name)
cache = locate.writable_data_dir(config.data_dir) / 'dnn_jax_arrays' / 'cifar10' / version
target = stage / 'dnn_jax_arrays' / 'cifar10' / version
target.mkdir(parents=True)
for split in ('train', 'test'):
  with np.load(cache / f'{split}.npz') as arrays:
    np.savez_compressed(target / f'{split}.npz', **arrays)
PYTHON
  then
    tar -cf .gpu_parts/cifar10.tar -C .gpu_parts/stage tfds
    $PY -m benchmarks.carry split .gpu_parts/cifar10.tar --part_mb 45
    rm -rf .gpu_parts/stage .gpu_parts/cifar10.tar
    ls -l .gpu_parts
  else
    rm -rf .gpu_parts
  fi
  exit 0
fi

missing=$($PY -c "import importlib.util as u
print(' '.join(m for m in ('ml_collections', 'dm_pix', 'yaml') if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
  echo "installing from $CARRY/wheels: $missing"
  $PY -m pip install --quiet --no-index --find-links "$CARRY/wheels" ml-collections dm-pix pyyaml
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
real_cifar=0
if [ -f .gpu_parts/cifar10.tar.sha256 ] && [ "${SYNTHETIC_CIFAR:-0}" != 1 ]; then
  $PY -m benchmarks.carry join .gpu_parts/cifar10.tar  # or one line naming what is missing
  mkdir -p "$CARRY" && tar -xf .gpu_parts/cifar10.tar -C "$CARRY" && rm .gpu_parts/cifar10.tar
  real_cifar=1
fi
if [ -d "$CARRY/tfds/mnist" ] || [ -d "$CARRY/tfds/cifar10" ]; then
  export DNN_JAX_DATA_DIR="$PWD/$CARRY/tfds"
  $PY - <<'PYTHON'
# The cached arrays name the directory they were decoded from: point them at this one.
import os, pathlib
import numpy as np
root = pathlib.Path(os.environ['DNN_JAX_DATA_DIR'])
for npz in (root / 'dnn_jax_arrays').rglob('*.npz'):
  with np.load(npz) as cached:
    arrays = {k: cached[k] for k in cached.files}
  arrays['source'] = np.array(str(root.resolve()))
  np.savez_compressed(npz, **arrays)
PYTHON
fi

mkdir -p "$OUT"
data=() calls=() budget=() epochs=10 depth=110 cnn_steps=50 resnet_steps=20 validate=5000
mnist=(mnist_mlp mnist_cnn mnist_cnn_deep) cifar_float32=1
if [ "${QUICK:-0}" = 1 ]; then
  mnist=(mnist_mlp) cifar_float32=0
  data=(--config.data.train_split='train[:1024]' --config.data.validation_split='test[:500]'
        --config.data.test_split='test[:500]')
  calls=(--config.steps_per_call=2) epochs=1 depth=11
  budget=(--warmup_steps=2 --min_steps=2 --min_seconds=0 --eval_repeats=1) cnn_steps=2 resnet_steps=2
  validate=500
fi
bench() {  # name, config file, flags...
  local name=$1 file=$2
  shift 2
  $PY -m benchmarks.throughput --config "experiments/$file.py" --config.num_devices=1 \
    --record="$OUT/records.jsonl" "${budget[@]}" "${data[@]}" "$@" | grep '^{' > "$OUT/$name.json"
}
for experiment in "${mnist[@]}"; do
  bench "$experiment" "$experiment" "${calls[@]}"
done
cifar=(--config.data.synthetic=True --config.data.validation_split="test[:$validate]")
if [ "$real_cifar" = 1 ]; then
  # The carried arrays hold whole splits only (QUICK=1 cuts them for MNIST alone).
  cifar=(--config.data.train_split=train --config.data.validation_split=test --config.data.test_split=test)
fi
if [ "$cifar_float32" = 1 ]; then
  bench cifar10_cnn cifar10_cnn "${cifar[@]}" --config.steps_per_call=$cnn_steps
fi
bench cifar10_cnn_bf16_b512 cifar10_cnn "${cifar[@]}" --config.dtype=bfloat16 \
  --config.batch_size=512 --config.steps_per_call=$cnn_steps
bench "resnet$depth" cifar10_resnet110_aug "${cifar[@]}" --config.model.depth="$depth" \
  --config.steps_per_call=$resnet_steps
rm -rf "$OUT/mnist_mlp_run"
$PY -m dnn_jax.main --config experiments/mnist_mlp.py --workdir "$OUT/mnist_mlp_run" --noreport \
  --config.num_devices=1 --config.num_epochs="$epochs" --config.progress=lines "${data[@]}" \
  > "$OUT/mnist_mlp_run.log"

$PY - "$OUT" "resnet$depth" <<'PYTHON'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f'\n{"experiment":<22}{"device":<22}{"data":<10}{"dtype":<9}{"batch":>6}'
      f'{"train samples/s":>16}{"eval samples/s":>16}{"epoch s":>9}{"compile s":>11}{"peak MB":>9}')
names = ('mnist_mlp', 'mnist_cnn', 'mnist_cnn_deep', 'cifar10_cnn', 'cifar10_cnn_bf16_b512',
         sys.argv[2])
for name in names:
  if not (out / f'{name}.json').is_file():  # QUICK=1 leaves some out
    continue
  r = json.loads((out / f'{name}.json').read_text().splitlines()[0])
  print(f'{name:<22}{r["device"]:<22}{r["data"]:<10}{r["dtype"]:<9}{r["batch_size"]:>6}'
        f'{r["train_samples_per_sec"]:>16,.0f}{r["eval_samples_per_sec"]:>16,.0f}'
        f'{r["epoch_seconds"]:>9.1f}{r["compile_seconds"]:>11.1f}{r["peak_memory_mb"]:>9,.0f}')
m = json.loads((out / 'mnist_mlp_run' / 'metrics.json').read_text())
seconds = sum(h['train_seconds'] for h in m['history'])
print(f'\nmnist_mlp, {len(m["history"])} epochs on {m["devices"]["kind"]}: training {seconds:.2f} s '
      f'(compile {m["compile_seconds"]:.1f} s apart), Test accuracy {m["test"]["accuracy"]:.4f}')
PYTHON
