"""Sweep configs: an experiment config plus a `sweep` section (python -m dnn_jax.sweep)."""
