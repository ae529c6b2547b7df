"""Mistakes in the input stop `python -m flanet_jax.main` (= `flanet-jax`) with one line,
`error: ...`, naming the flag, key, file or value, and exit status 1: no traceback (unless
--verbose), nothing compiled, and for data and flags nothing written. Bugs keep their
traceback. (The converter's errors: tests/test_convert.py; export without a checkpoint:
tests/test_export.py.)"""

import shutil

import pytest

from tests import support


@pytest.fixture(scope='module')
def config_file(tmp_path_factory, tiny_dataset):
  return support.write_tiny_config_file(tmp_path_factory.mktemp('config') / 'tiny.py',
                                        tiny_dataset)


def _user_error(config_file, workdir, *flags) -> str:
  return support.user_error(support.launch_main(config_file, workdir, 1, *flags,
                                                env=support.COMPILES_LOGGED))


@pytest.mark.parametrize('flags, culprit', [
    (['--config.data.crop_sise=32'],
     'error: --config.data.crop_sise: the config has no key \'crop_sise\' (Did you mean '
     '"crop_size"'),
    (['--config', 'configs/no_such_config.py'], "No such file or directory: "
                                                "'configs/no_such_config.py'"),
    (['--mode', 'evaluate'], 'error: flag --mode=evaluate: value should be one of'),
], ids=['unknown-key', 'missing-config-file', 'bad-mode'])
def test_command_line_mistakes(config_file, tmp_path, flags, culprit):
  assert culprit in _user_error(config_file, tmp_path / 'work', *flags)
  assert not (tmp_path / 'work').exists()


def test_missing_data_root(config_file, tmp_path):
  missing = tmp_path / 'no_such_dataset'
  error = _user_error(config_file, tmp_path / 'work', f'--config.data.root={missing}')
  assert str(missing) in error
  assert not (tmp_path / 'work').exists()


def test_image_without_label(config_file, tiny_dataset, tmp_path):
  root = shutil.copytree(tiny_dataset, tmp_path / 'cityscapes')
  label = sorted((root / 'gtFine' / 'train').glob('*/*_labelIds.png'))[2]
  label.unlink()
  error = _user_error(config_file, tmp_path / 'work', f'--config.data.root={root}')
  assert error.startswith('error: Image ') and 'has no label' in error
  assert label.name.replace('gtFine_labelIds', 'leftImg8bit') in error
  assert not (tmp_path / 'work').exists()


@pytest.mark.parametrize('flag, error_line', [
    ('--config.eval.mode=sliding', "error: eval.mode must be 'whole' or 'slide', got 'sliding'"),
    ('--config.model.backbone=resnet7', "error: model.backbone='resnet7': choose one of ["),
    ('--config.model.attention=fca', "error: model.attention='fca': choose one of ["),
    ('--config.model.kernels=cuda',
     "error: model.kernels='cuda': choose one of ['auto', 'xla', 'tuned']"),
], ids=['eval.mode', 'model.backbone', 'model.attention', 'model.kernels'])
def test_invalid_config_value(config_file, tmp_path, flag, error_line):
  assert _user_error(config_file, tmp_path / 'work', flag).startswith(error_line)
  assert not (tmp_path / 'work').exists()


def test_missing_init_from_weights(config_file, tmp_path):
  missing = tmp_path / 'not_converted_yet'
  error = _user_error(config_file, tmp_path / 'work', f'--config.init_from={missing}')
  assert error.startswith(f"error: init_from='{missing}' does not exist")


def test_verbose_shows_the_traceback_of_a_missing_checkpoint(config_file, tmp_path):
  output = support.fails(support.launch_main(config_file, tmp_path, 1, '--mode', 'eval',
                                             '--verbose'))
  assert 'Traceback' in output and 'UserFileNotFoundError' in output
  assert output.rstrip().splitlines()[-1].startswith(
      f'error: No checkpoint in {tmp_path}/checkpoints; train first, or set init_from')


def test_a_bug_keeps_its_traceback(tiny_dataset, tmp_path):
  buggy = tmp_path / 'buggy.py'  # a config file whose import plants a bug in the trainer
  buggy.write_text(
      'from flanet_jax import train\nfrom tests import support\n\n\n'
      'def _bug(config, workdir):\n  raise TypeError("a bug, not a user error")\n\n\n'
      'train.train_and_evaluate = _bug\n\n\n'
      f'def get_config():\n  return support.tiny_config({str(tiny_dataset)!r})\n')
  process = support.launch_main(buggy, tmp_path / 'work', 1)
  output = support.fails(process)
  assert process.returncode == 1
  assert 'Traceback' in output and 'TypeError: a bug, not a user error' in output
  assert not any(line.startswith('error:') for line in output.splitlines())
