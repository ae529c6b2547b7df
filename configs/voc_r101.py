"""FLANet-ResNet101 on PASCAL VOC 2012 (21 classes), trained on trainaug (VOC + SBD).

Paper (Song et al., AAAI 2022, Sec. 4): SGD momentum 0.9, weight decay 5e-4, LR 0.01, poly
0.9, batch 8, 520x520 crops, random scale 0.5-2.0, flip, colour jitter, synchronised BN.
The paper gives one epoch count, 240, for every dataset; used here too. First write the
trainaug split:
  python scripts/prepare_voc_aug.py data/VOCdevkit/VOC2012 data/benchmark_RELEASE/dataset
Chosen here (as in configs/cityscapes_r101.py): OHEM on the main output, CE with weight 0.4
on the auxiliary outputs, 10x head LR. Resize base (2048, 512) as in mmsegmentation.
Evaluation: whole images (VOC's are at most 500x500) on one 512x512 canvas, so a single
compiled shape; test-server PNGs with --mode export --config.eval.export_split=test.
"""

from configs import cityscapes_r101

VOC_TRAINAUG_IMAGES = 10_582


def get_config():
  config = cityscapes_r101.get_config()
  config.num_train_steps = 240 * VOC_TRAINAUG_IMAGES // config.batch_size  # 317,460
  config.eval_every_steps = 20_000
  config.model.num_classes = 21

  config.data.name = 'voc'
  config.data.root = 'data/VOCdevkit/VOC2012'
  config.data.train_split = 'trainaug'
  config.data.crop_size = (520, 520)
  config.data.base_size = (2048, 512)
  config.loss.ohem_min_kept = 50_000

  config.eval.mode = 'whole'
  config.eval.size_divisor = 512
  return config
