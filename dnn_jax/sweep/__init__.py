"""Hyperparameter sweeps: the tutorial's hyperopt notebook re-done with optuna, trials vmapped.

optuna rather than hyperopt (both are maintained and on PyPI): optuna 5 has ask-and-tell, so
the sweep asks for a batch of trials and trains those of one shape as one vmapped program;
integer and float ranges with steps; a seeded TPE sampler, so a config proposes the same
trials run after run; and a journal-file storage that a re-run continues.

  space.py    config.sweep checked; optuna distributions; one trial's experiment config
  vmapped.py  trials of one shape as one program: stacked states, vmapped steps
  study.py    the optuna study in the workdir: sampler, resume, interrupted trials
  run.py      the loop: ask a batch, train its groups, tell, write tables and plots
  tables.py   trials.csv, trials.md, the console's best trial and top 5
  plots.py    the notebook's scatter plots
"""
