"""Default configuration: every key the code reads, with the paper's Cityscapes recipe.

Experiment configs start from `get_config()` and change values. The returned config is locked:
assigning or overriding (`--config.key=value`) a key that does not exist raises an error.
"""

import ml_collections
from ml_collections import config_dict


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
  config.init_from = ''  # converted PyTorch weights (see flanet-jax-convert)

  config.model = ml_collections.ConfigDict()
  config.model.num_classes = 19
  config.model.backbone = 'resnet101'
  config.model.attention = 'fla'
  config.model.deep_stem = True
  config.model.output_stride = 8
  config.model.head_features = 512
  config.model.aux_features = 64
  config.model.dropout_rate = 0.1
  # x2 upsampling before the output modules' 3x3 conv; None: on, except for HRNet (stride 4).
  config.model.output_upsample = config_dict.placeholder(bool)
  # > 0: the FLA block computes its row/column attention this many rows (columns) at a time,
  # so only that many C x C maps exist at once (memory; on CPU also faster). 0: all at once.
  config.model.fla_chunk_size = 0
  config.model.remat = False  # recompute the backbone's residual blocks in the backward pass
  # Implementation of the model's operations (flanet_jax/kernels): 'auto' (tuned for XLA:CPU
  # on CPU, plain XLA operations elsewhere), 'xla' (plain everywhere) or 'tuned'. Same results.
  config.model.kernels = 'auto'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'cityscapes'  # 'cityscapes', 'ade20k' or 'voc' (README: layouts, roots)
  config.data.root = 'data/cityscapes'
  config.data.train_split = 'train'  # VOC: 'trainaug' after scripts/prepare_voc_aug.py
  config.data.eval_split = 'val'
  config.data.crop_size = (768, 768)  # (height, width)
  # Random resize (mmseg RandomResize, keep ratio): fit the image inside base_size * ratio,
  # ratio uniform in scale_range. base_size is (long, short) edge: Cityscapes (2048, 1024),
  # ADE20K and VOC (2048, 512); () scales the image's own size by the ratio.
  config.data.base_size = (2048, 1024)
  config.data.scale_range = (0.5, 2.0)
  config.data.cat_max_ratio = 0.75  # redraw crops where one class exceeds this (1.0: off)
  config.data.flip = True
  config.data.photometric = True  # mmseg PhotoMetricDistortion (brightness, contrast, HSV)
  config.data.workers = 4  # grain worker processes per host (0: in the main process)
  config.data.eval_batch_size = 8  # global; one image per device suits mixed sizes best
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
  config.eval.checkpoint_step = -1  # --mode eval/export: -1 restores the latest checkpoint
  # Colourised predictions: PNGs of --mode eval; TensorBoard images of training's evaluations.
  config.eval.num_prediction_images = 8
  # Inference (flanet_jax/inference.py); the paper's MS+F: multi_scale and flip True.
  config.eval.mode = 'whole'  # 'whole' image, or 'slide': crop_size windows, logits averaged
  config.eval.crop_size = (768, 768)  # slide windows (height, width)
  config.eval.stride = (512, 512)  # slide step; the last window is aligned to the border
  config.eval.multi_scale = False  # average softmax over `scales` (ratios of the image size)
  config.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
  config.eval.flip = False  # also average the horizontally flipped image
  # Images of one step are padded to a shared canvas; rounding it up to a multiple of this
  # bounds the number of compiled shapes on datasets of many sizes (ADE20K, VOC).
  config.eval.size_divisor = 1
  config.eval.export_split = 'test'  # --mode export: the split to predict (Cityscapes server)

  config.predict = ml_collections.ConfigDict()  # --mode predict (inference: config.eval)
  config.predict.input = ''  # an image, a folder of images or a glob such as 'photos/*.jpg'
  config.predict.output_name = ''  # folder under workdir/predict; '' names it after the weights
  config.predict.overlay_opacity = 0.5  # of the class colours over the photo in overlay/

  config.visualise = ml_collections.ConfigDict()
  config.visualise.num_images = 8  # --mode visualise: panels of the first images of eval_split

  # Several processes (hosts) in one job, through jax.distributed (flanet_jax/parallel.py).
  config.distributed = ml_collections.ConfigDict()
  # None: join when the environment shows a multi-process SLURM (srun), Open MPI (mpirun) or
  # GKE TPU job; True: let JAX find the coordinator (Cloud TPU pod slices); False: never.
  config.distributed.auto = config_dict.placeholder(bool)
  config.distributed.coordinator_address = ''  # explicit: 'host:port' of process 0,
  config.distributed.num_processes = 1  # the number of processes
  config.distributed.process_id = 0  # and this one's id (0 .. num_processes - 1)

  config.lock()
  return config
