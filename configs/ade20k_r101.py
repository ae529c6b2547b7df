"""FLANet-ResNet101 on ADE20K (SceneParsing, 150 classes) with the paper's recipe.

Paper (Song et al., AAAI 2022, Sec. 4): SGD momentum 0.9, weight decay 5e-4, LR 0.01, poly
0.9, batch 8, 520x520 crops, random scale 0.5-2.0, flip, colour jitter, synchronised BN;
46.68 mIoU on val. The paper gives one epoch count, 240, for every dataset; used here too.
Chosen here (as in configs/cityscapes_r101.py): OHEM on the main output, CE with weight 0.4
on the auxiliary outputs, 10x head LR. Resize base (2048, 512) as in mmsegmentation.
Evaluation: sliding 520x520 windows over the full-resolution image (mixed sizes; canvases
rounded up to 64 pixels to bound the compiled shapes); MS+F with --config.eval.multi_scale=True
--config.eval.flip=True.
"""

from configs import cityscapes_r101

ADE20K_TRAIN_IMAGES = 20_210


def get_config():
  config = cityscapes_r101.get_config()
  config.num_train_steps = 240 * ADE20K_TRAIN_IMAGES // config.batch_size  # 606,300
  config.eval_every_steps = 50_000
  config.model.num_classes = 150

  config.data.name = 'ade20k'
  config.data.root = 'data/ade/ADEChallengeData2016'
  config.data.crop_size = (520, 520)
  config.data.base_size = (2048, 512)
  config.loss.ohem_min_kept = 50_000  # ~ the same share of a 520x520 crop as 100k of 768x768

  config.eval.mode = 'slide'
  config.eval.crop_size = (520, 520)
  config.eval.stride = (347, 347)
  config.eval.size_divisor = 64
  return config
