"""Learning-rate range test: N rates trained as one vmapped program, and a suggested rate.

Lightning's and fastai's finders run one training whose rate grows step by step; here each
rate is a trial of dnn_jax.sweep.vmapped, trained from the same weights for the same steps.

  suggest.py  the rates, the smoothed curves, the statuses and the suggestion rule
  run.py      lr_find(config, workdir): train the trials, lr_find.json, the table
  plot.py     lr_find.png (also drawn into a run's report)
"""

JSON, PNG = 'lr_find.json', 'lr_find.png'  # what it writes in the workdir
