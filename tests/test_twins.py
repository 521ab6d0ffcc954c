"""The peers' twins: every experiment has one; anything else is refused in one line."""

import importlib

import pytest
from conftest import REPO

from benchmarks import twins
from dnn_jax.errors import UserError

EXPERIMENTS = sorted(
  p.stem for p in (REPO / 'experiments').glob('*.py') if p.stem not in ('__init__', 'base')
)


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_every_experiment_has_twins(name):
  twins.check(importlib.import_module(f'experiments.{name}').get_config())


@pytest.mark.parametrize('section, name', [('model', 'vit'), ('optimizer', 'lion')])
def test_a_model_or_optimizer_without_a_twin_is_one_line(section, name):
  config = importlib.import_module('experiments.mnist_mlp').get_config()
  config[section].name = name
  with pytest.raises(UserError, match=f"no twin of {section} '{name}'.*leave out --peers"):
    twins.check(config)
