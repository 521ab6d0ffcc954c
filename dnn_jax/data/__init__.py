"""Datasets by tfds name: prepare from originals, read as uint8 arrays, feed the device."""

from dnn_jax.data.catalog import DATASETS
from dnn_jax.data.splits import Splits, load

__all__ = ['DATASETS', 'Splits', 'load']
