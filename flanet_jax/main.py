"""Entry point: flags only. The work is in train.py and evaluate.py.

  python -m flanet_jax.main --config configs/demo.py --workdir /tmp/demo [--mode train|eval]
  python -m flanet_jax.main --config configs/cityscapes_r101.py --workdir DIR \
      --config.data.root=/data/cityscapes --config.batch_size=16
"""

from absl import app, flags, logging
from ml_collections import config_flags

from flanet_jax import evaluate, parallel, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (resumes if possible) or eval.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # library INFO logs would drown the progress bar
  config = FLAGS.config
  parallel.initialize_distributed(config.distributed)
  if FLAGS.mode == 'train':
    train.train_and_evaluate(config, FLAGS.workdir)
  else:
    evaluate.evaluate(config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
