"""A small FLANet (ResNet-18, narrow head) on the synthetic dataset, small enough for a CPU.

The dataset is written to data/synthetic_cityscapes on first use.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.seed = 0
  config.batch_size = 8
  config.num_train_steps = 300
  config.log_every_steps = 10
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 2

  config.model.backbone = 'resnet18'
  config.model.deep_stem = False
  config.model.head_features = 64
  config.model.aux_features = 32

  config.data.root = 'data/synthetic_cityscapes'
  config.data.generate_if_missing = True
  config.data.crop_size = (64, 64)
  config.data.base_size = ()  # ratios of the small synthetic images' own size
  config.data.scale_range = (0.5, 1.0)
  config.data.workers = 0
  config.data.eval_batch_size = 8

  config.optimizer.learning_rate = 0.02
  config.optimizer.head_lr_multiplier = 1.0  # no pretrained backbone: train all alike
  config.optimizer.warmup_steps = 20
  config.loss.name = 'ce'
  return config
