r"""Entry point: flags only. The work is in train.py, evaluate.py and export.py.

  flanet-jax --config configs/demo.py --workdir /tmp/demo [--mode train|eval|export]
  flanet-jax --config configs/cityscapes_r101.py --workdir DIR \
      --config.data.root=/data/cityscapes --config.batch_size=16

`python -m flanet_jax.main` takes the same flags. A mistake in the input (a missing file, an
unknown config key, a bad value) ends with one `error: ...` line and exit status 1;
`--verbose` shows its traceback too.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from flanet_jax import errors, evaluate, export, parallel, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'export'],
                  'train (resumes if possible), eval (scores eval.checkpoint_step on '
                  'data.eval_split) or export (PNGs of eval.export_split for a test server).')
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
  else:
    export.export(config, FLAGS.workdir)


def _last_line(message: str) -> str:
  """ml_collections reports a config file's own exception after its traceback."""
  return [line.strip() for line in message.splitlines() if line.strip()][-1]


def _unknown_config_key(error: Exception, argv) -> str | None:
  """The message for an override of a key the config lacks, or None if `error` is not that.

  ml_collections raises it as AttributeError(KeyError(key + hint)) from KeyError(key).
  """
  chain = []
  while error is not None:
    chain.append(error)
    error = error.__context__
  if not isinstance(chain[-1], KeyError) or not chain[-1].args:
    return None
  key = str(chain[-1].args[0])
  for arg in argv[1:]:
    flag = arg.split('=', 1)[0].lstrip('-')
    if flag.startswith('config.') and key in flag.split('.'):
      hints = [line for c in chain for line in str(c.args[0] if c.args else '').splitlines()
               if line.startswith('Did you mean')]
      return f'--{flag}: the config has no key {key!r}' + (f' ({hints[0]})' if hints else '')
  return None


def parse_flags(argv):
  """absl's flag parsing, with every mistake on the command line (an unknown flag or config
  key, a value of the wrong type, a config file that is missing or rejects its argument)
  raised as a UserError rather than printed with the usage."""
  try:
    remaining = FLAGS(argv)
  except SystemExit as done:  # absl ends --help with status 1; asked-for help is a success
    if done.code == 1 and {'--help', '--helpshort', '--helpfull', '-?'} & set(argv[1:]):
      sys.exit(0)
    raise
  except flags.Error as error:
    message = str(error)
    if '\n' in message:  # the config file's get_config raised: the flag and its last line
      message = f'{message.split(": ", 1)[0]}: {_last_line(message)}'
    raise errors.UserError(message) from error
  except (AttributeError, KeyError) as error:
    message = _unknown_config_key(error, argv)
    if message is None:
      raise
    raise errors.UserError(message) from error
  try:
    FLAGS.config.get('seed')  # a config file that could not be loaded raises when first read
  except OSError as error:
    raise errors.UserError(f'--config: {_last_line(str(error))}') from error
  return remaining


def _lend_help_to_console_script():
  """absl's --help prints the docstring and flags of the __main__ module; under a console
  script that is a generated wrapper, so it gets this module's."""
  wrapper = sys.modules['__main__']
  if wrapper is not sys.modules[__name__]:
    wrapper.__doc__ = __doc__
    for flag in FLAGS.get_key_flags_for_module(__name__):
      FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run():
  """The `flanet-jax` command: `main` under absl, a UserError as one `error: ...` line."""
  _lend_help_to_console_script()
  # Config files import `configs.*` from the working directory, as `python -m` allows; a
  # console script's sys.path starts at its own bin/ folder instead.
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  try:
    app.run(main, flags_parser=parse_flags)
  except errors.UserError as error:
    errors.exit_with(error, verbose=FLAGS['verbose'].value or '--verbose' in sys.argv)


if __name__ == '__main__':
  run()
