"""Defaults shared by every experiment: data, batch, epochs, devices, checkpoints, progress."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Each experiment sets its own config.model (models.model_config) and config.optimizer
  # (optim.optimizer_config): every argument of the model and optimizer it names, no others.

  config.data = ml_collections.ConfigDict()
  config.data.name = 'mnist'  # a tfds name: mnist, fashion_mnist or cifar10
  config.data.data_dir = ''  # writable tfds dir; '' = $DNN_JAX_DATA_DIR or data/tfds
  config.data.data_dirs = ''  # extra read-only tfds dirs, ':'-separated (+ $DNN_JAX_DATA_DIRS)
  config.data.manual_dir = ''  # original files; '' = data/<name>
  config.data.train_split = 'train'
  config.data.validation_split = 'test'  # the tutorial validates on the test set
  config.data.test_split = 'test'
  config.data.synthetic = False  # random images of these shapes and sizes: benchmarks only
  # How batches reach the devices: 'device' (every split lives on each device, batches are
  # gathered there: fastest), 'grain' (streamed from the files by grain, a call's batches at a
  # time: for splits too big for a device), or 'auto' (device when the splits fit the budget).
  config.data.pipeline = 'device'
  config.data.device_budget_mb = 0  # most the splits may take on a device; 0 = 1/4 of its memory
  config.data.workers = 0  # grain: worker processes reading ahead (0: threads of this process)

  # Augmentation: name -> params, applied in order on the device (dnn_jax.data.augment).
  config.augment = ml_collections.ConfigDict()  # training images
  config.eval_augment = ml_collections.ConfigDict()  # deterministic: validation and test

  # The layers compute in this dtype from float32 params: 'float32', or 'bfloat16' (mixed
  # precision, for GPUs/TPUs; a CPU emulates it slowly).
  config.dtype = 'float32'
  config.batch_size = 128  # global: split evenly across devices
  # Update the weights once every N batches, with their mean gradient: an N * batch_size
  # recipe on fewer (or smaller) devices (BatchNorm statistics still move every batch).
  config.grad_accum_steps = 1
  # Evaluate (and keep as best, report, export) an exponential moving average of the weights,
  # ema = decay * ema + (1 - decay) * weights after every update; 0 = off. BatchNorm statistics
  # stay the trained model's.
  config.ema = ml_collections.ConfigDict()
  config.ema.decay = 0.0
  # The n-th update averages with min(decay, (1 + n) / (10 + n)), as TensorFlow's
  # ExponentialMovingAverage(num_updates): the initial weights fade in a few hundred steps.
  config.ema.warmup = True
  config.eval_batch_size = 1000
  config.num_epochs = 10
  # Stop after the first epoch whose validation accuracy reaches this (0 = train every epoch);
  # metrics.json then says which epoch in 'stopped_at_accuracy'. Time-to-accuracy runs use it.
  config.stop_at_accuracy = 0.0
  # Optimizer steps per compiled call; 0 = a whole epoch. The progress bar moves once a call:
  # set e.g. 50 for a bar that moves within the epoch (results agree to float rounding).
  config.steps_per_call = 0
  config.num_devices = 0  # 0 = every visible device
  # Data parallelism: 'sharded' (jit of shard_map over the mesh) or 'pmap' (jax.pmap, the
  # design card's pmapped step; today's jax runs it as jit(shard_map) too). Same results.
  config.parallel = 'sharded'
  # Several processes (hosts): inside SLURM, Open MPI, a TPU slice or Kubernetes (with the
  # kubernetes package) JAX finds them by itself; these values, or JAX_COORDINATOR_ADDRESS,
  # JAX_NUM_PROCESSES and JAX_PROCESS_ID (or a Kubernetes JOB_COMPLETION_INDEX) override it.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.cluster = 'auto'  # or 'none', or one of JAX's: slurm, ompi, k8s, ...
  config.distributed.coordinator_address = ''  # host:port of process 0
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  # Persistent XLA compilation cache: a later run of the same shapes loads its compiled
  # programs instead of compiling them ('' = none). Only point it at a directory you trust.
  config.compilation_cache_dir = ''
  config.progress = 'auto'  # auto (a bar on a terminal), bar or lines
  # Log sinks beside metrics.json and TensorBoard (dnn_jax/logs.py), fed the same records.
  config.log = ml_collections.ConfigDict()
  config.log.csv = False  # <workdir>/metrics.csv, one row per epoch
  # A Weights & Biases run per workdir (pip install wandb), files in <workdir>/wandb; offline
  # (then `wandb sync`) unless logged in or WANDB_MODE says otherwise.
  config.log.wandb = False
  config.log.wandb_project = 'dnn_jax'
  # Trace optimizer steps [start_step, start_step + num_steps) for xprof, with the device
  # memory at their end, into <workdir>/tensorboard (dnn_jax/profiling.py); -1 = off.
  config.profile = ml_collections.ConfigDict()
  config.profile.start_step = -1
  config.profile.num_steps = 10

  # Checkpoints in <workdir>/checkpoints: one at every epoch's end, and, if every_steps > 0, at
  # the end of the compiled call that reaches each multiple of every_steps (calls are cut to
  # at most every_steps steps). Re-running on the same workdir resumes from the latest.
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 0
  config.checkpoint.max_to_keep = 3  # the most recent; the best by val_accuracy is kept besides
  config.checkpoint.async_save = True  # write in the background while training goes on
  config.init_from = ''  # a workdir or checkpoint to take the weights from, for a new run
  config.on_nonfinite = 'stop'  # NaN/Inf loss or params: stop, or skip_step (leave it out)

  # Keras's callbacks with Keras's arguments and semantics (dnn_jax/callbacks.py), at epoch
  # ends; their state is checkpointed, so a resumed run decides as an uninterrupted one.
  # monitor: loss, accuracy, val_loss or val_accuracy; mode 'auto' maximizes accuracies.
  config.reduce_lr_on_plateau = ml_collections.ConfigDict()
  config.reduce_lr_on_plateau.enabled = False
  config.reduce_lr_on_plateau.monitor = 'val_loss'
  config.reduce_lr_on_plateau.factor = 0.1  # the new rate: rate * factor (at least min_lr)
  config.reduce_lr_on_plateau.patience = 10  # epochs without improvement before a cut
  config.reduce_lr_on_plateau.min_delta = 1e-4  # smaller changes are no improvement
  config.reduce_lr_on_plateau.cooldown = 0  # epochs after a cut before waiting again
  config.reduce_lr_on_plateau.min_lr = 0.0
  config.reduce_lr_on_plateau.mode = 'auto'  # or min, max
  config.early_stopping = ml_collections.ConfigDict()
  config.early_stopping.enabled = False
  config.early_stopping.monitor = 'val_loss'
  config.early_stopping.patience = 0  # epochs without improvement before stopping
  config.early_stopping.min_delta = 0.0
  config.early_stopping.mode = 'auto'
  # At the end, test (and save) the weights of the best epoch by the monitor, not the last.
  config.early_stopping.restore_best_weights = False
  return config
