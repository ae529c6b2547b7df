"""Running an absl `main` as a command, with mistakes in the input as one `error: ...` line.

absl prints a bad flag with the usage, and ml_collections' config flag raises an unknown
config key, or a config file that is missing, as an exception with a traceback; here each
becomes a UserError, as do the UserErrors `main` raises, and ends as `error: ...` (status 1).
"""

import os
import sys

from absl import app, flags

from flanet_jax import errors

FLAGS = flags.FLAGS


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


def _lend_help_to_console_script(module_name: str):
  """absl's --help prints the docstring and flags of the __main__ module; under a console
  script that is a generated wrapper, so it gets those of `module_name`."""
  wrapper, module = sys.modules['__main__'], sys.modules[module_name]
  if wrapper is not module:
    wrapper.__doc__ = module.__doc__
    for flag in FLAGS.get_key_flags_for_module(module_name):
      FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main, module_name: str) -> None:
  """`app.run(main)` for the module `module_name`, which defines the flags (--config, --verbose
  among them): a UserError, or a mistake in the flags, ends as `error: ...` with status 1."""
  _lend_help_to_console_script(module_name)
  # Config files import `configs.*` from the working directory, as `python -m` allows; a
  # console script's sys.path starts at its own bin/ folder instead.
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  try:
    app.run(main, flags_parser=parse_flags)
  except errors.UserError as error:
    errors.exit_with(error, verbose=FLAGS['verbose'].value or '--verbose' in sys.argv)
