"""Entry point: flags only. The work is in train.py, evaluate.py, export.py and predict.py.

  python -m flanet_jax.main --config configs/demo.py --workdir /tmp/demo \
      [--mode train|eval|export|predict]
  python -m flanet_jax.main --config configs/cityscapes_r101.py --workdir DIR \
      --config.data.root=/data/cityscapes --config.batch_size=16
"""

from absl import app, flags, logging
from ml_collections import config_flags

from flanet_jax import evaluate, export, parallel, predict, train, visualise

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'export', 'predict', 'visualise'],
                  'train (resumes if possible), eval (scores eval.checkpoint_step on '
                  'data.eval_split), export (PNGs of eval.export_split for a test server), '
                  'predict (class maps of the images at predict.input) or visualise (the '
                  "attention block's output on data.eval_split images). eval, export, predict "
                  'and visualise use init_from (converted weights) when the workdir has no '
                  'checkpoint.')
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
  elif FLAGS.mode == 'eval':
    evaluate.evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == 'predict':
    predict.predict(config, FLAGS.workdir)
  elif FLAGS.mode == 'visualise':
    visualise.visualise(config, FLAGS.workdir)
  else:
    export.export(config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
