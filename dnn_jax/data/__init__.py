"""Datasets by tfds name: catalog, locate, prepare (TensorFlow), read, splits (load)."""
