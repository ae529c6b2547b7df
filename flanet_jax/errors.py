"""Mistakes in what the user gave us (files, config values, flags, checkpoints).

The command-line entry points print a `UserError` as one `error: ...` line and exit with
status 1 (`--verbose` adds the traceback); any other exception is a bug and keeps its
traceback. The subclasses are also the built-in error a caller would expect (a missing file
is a FileNotFoundError), so code that catches those keeps working.
"""

import sys
import traceback
from typing import NoReturn


class UserError(Exception):
  """Bad input from the user; the message names the file, key or value at fault."""


class UserValueError(UserError, ValueError):
  """A value (config entry, flag, file content) that cannot be used."""


class UserFileNotFoundError(UserError, FileNotFoundError):
  """A file or directory the user pointed at (or the run needs) does not exist."""


class UserFileExistsError(UserError, FileExistsError):
  """The output path already exists; nothing is ever overwritten."""


def exit_with(error: UserError, verbose: bool) -> NoReturn:
  """What the command-line entry points do with a UserError: its message as `error: ...` on
  stderr (after the traceback if `verbose`), then exit status 1."""
  if verbose:
    traceback.print_exception(error)
  print(f'error: {error}', file=sys.stderr)
  sys.exit(1)
