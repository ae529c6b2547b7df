"""Default configuration: every key the code reads, with the paper's Cityscapes recipe.

Experiment configs start from `get_config()` and change values. The returned config is locked:
assigning or overriding (`--config.key=value`) a key that does not exist raises an error.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 8  # global, over all devices and hosts
  config.num_train_steps = 90_000  # length of the LR schedule and of the run
  config.stop_at_step = 0  # > 0: stop (with a checkpoint) here, e.g. for time-limited jobs
  config.log_every_steps = 50
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  config.keep_checkpoints = 3
  config.dtype = 'float32'  # compute dtype: 'float32' or 'bfloat16' (params, BN stats, loss fp32)
  config.init_from = ''  # converted PyTorch weights (see scripts/convert_torch_weights.py)

  config.model = ml_collections.ConfigDict()
  config.model.num_classes = 19
  config.model.backbone = 'resnet101'
  config.model.attention = 'fla'
  config.model.deep_stem = True
  config.model.output_stride = 8
  config.model.head_features = 512
  config.model.aux_features = 64
  config.model.dropout_rate = 0.1
  # > 0: the FLA block computes its row/column attention this many rows (columns) at a time,
  # so only that many C x C maps exist at once (memory; on CPU also faster). 0: all at once.
  config.model.fla_chunk_size = 0
  config.model.remat = False  # recompute the backbone's residual blocks in the backward pass

  config.data = ml_collections.ConfigDict()
  config.data.name = 'cityscapes'
  config.data.root = 'data/cityscapes'
  config.data.train_split = 'train'
  config.data.eval_split = 'val'
  config.data.crop_size = (768, 768)  # (height, width)
  config.data.scale_range = (0.5, 2.0)  # random rescale ratio of the original image size
  config.data.flip = True
  config.data.workers = 4  # grain worker processes per host (0: in the main process)
  config.data.eval_batch_size = 8  # global; the last batch is padded and masked
  config.data.generate_if_missing = False  # synthetic data only: write it on first use

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.decay_norm_and_bias = False  # weight decay on BN scales/biases, biases, gamma
  config.optimizer.poly_power = 0.9
  config.optimizer.end_learning_rate = 0.0
  config.optimizer.warmup_steps = 0
  config.optimizer.warmup_init_ratio = 0.1  # warm-up starts at this fraction of the LR
  config.optimizer.head_lr_multiplier = 10.0  # everything outside `backbone`

  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'ohem'  # 'ce' or 'ohem'
  config.loss.ohem_threshold = 0.7  # keep pixels whose true-class probability is below this
  config.loss.ohem_min_kept = 100_000  # ... but at least this many per image
  config.loss.aux_weights = (0.4, 0.4)  # aux1 (layer2), aux2 (layer3)

  config.eval = ml_collections.ConfigDict()
  config.eval.checkpoint_step = -1  # --mode eval: -1 restores the latest checkpoint
  config.eval.num_prediction_images = 8  # colourised prediction PNGs written by --mode eval

  config.distributed = ml_collections.ConfigDict()
  config.distributed.coordinator_address = ''  # 'host:port' enables jax.distributed
  config.distributed.num_processes = 1
  config.distributed.process_id = 0

  config.lock()
  return config
