"""Experiment configs: one ml_collections file per experiment, each starting from base.py."""
