r"""Entry point: flags only. The work is in train.py, evaluate.py, export.py, predict.py and
visualise.py.

  flanet-jax --config configs/demo.py --workdir /tmp/demo \
      [--mode train|eval|export|predict|visualise]
  flanet-jax --config configs/cityscapes_r101.py --workdir DIR \
      --config.data.root=/data/cityscapes --config.batch_size=16

`python -m flanet_jax.main` takes the same flags. A mistake in the input (a missing file, an
unknown config key, a bad value) ends with one `error: ...` line and exit status 1;
`--verbose` shows its traceback too.
"""

from absl import flags, logging
from ml_collections import config_flags

from flanet_jax import (command_line, errors, evaluate, export, parallel, predict, train,
                        visualise)

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
flags.DEFINE_bool('verbose', False, 'On an error in the input, show its traceback too.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments {argv[1:]}; flags take the form --name=value')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # library INFO logs would drown the progress bar
  config = FLAGS.config
  parallel.initialize_distributed(config.distributed)
  if FLAGS.mode == 'train':
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == 'eval':
    evaluate.evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == 'export':
    export.export(config, FLAGS.workdir)
  elif FLAGS.mode == 'predict':
    predict.predict(config, FLAGS.workdir)
  else:
    visualise.visualise(config, FLAGS.workdir)


def run():
  """The `flanet-jax` command (a console script): `main` with clean errors."""
  command_line.run(main, __name__)


if __name__ == '__main__':
  run()
