"""FLANet-ResNet101 on Cityscapes with the paper's recipe (Song et al., AAAI 2022, Sec. 4).

Paper: SGD momentum 0.9, weight decay 5e-4, LR 0.01 with poly 0.9 per iteration, 240 epochs,
batch 8, 768x768 crops, random scale 0.5-2.0, flip, synchronised BN, ImageNet-pretrained
deep-stem ResNet-101; 81.3 mIoU on val (single scale).
Not stated in the paper, chosen here: OHEM (threshold 0.7, 100k pixels per image) on the main
output, CE on the two auxiliary outputs with weight 0.4 each, 10x LR on the head.
Test server (paper: 83.0): train on train+val with --config.data.train_split=train+val, then
--mode export (--config.eval.multi_scale=True --config.eval.flip=True for MS+F).
This recipe is the base of every other experiment config.
"""

from configs import backbones, default

CITYSCAPES_TRAIN_IMAGES = 2975


def get_config():
  config = default.get_config()
  config.batch_size = 8
  config.num_train_steps = 240 * CITYSCAPES_TRAIN_IMAGES // config.batch_size  # 89,250
  config.log_every_steps = 50
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000

  # ImageNet deep-stem ResNet-101, converted once with
  #   flanet-jax-convert resnet101-imagenet.pth weights/resnet101_deep \
  #       --arch resnet101_deep
  backbones.use_backbone(config, 'resnet101')
  config.model.attention = 'fla'

  config.data.name = 'cityscapes'
  config.data.root = 'data/cityscapes'
  config.data.crop_size = (768, 768)
  config.data.scale_range = (0.5, 2.0)
  config.data.workers = 8

  config.optimizer.learning_rate = 0.01
  config.optimizer.weight_decay = 5e-4
  config.optimizer.poly_power = 0.9
  config.optimizer.head_lr_multiplier = 10.0

  config.loss.name = 'ohem'
  config.loss.ohem_threshold = 0.7
  config.loss.ohem_min_kept = 100_000
  config.loss.aux_weights = (0.4, 0.4)
  return config
