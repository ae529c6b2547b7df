"""The wheel installs into a fresh environment, where both console scripts run."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import venv

from tests import support


def test_wheel_installs_both_commands(tmp_path):
  source = tmp_path / 'source'  # a copy: building writes build/ and *.egg-info beside it
  shutil.copytree(support.REPO / 'flanet_jax', source / 'flanet_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(support.REPO / name, source)
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '--quiet']
  subprocess.run([*pip, 'wheel', '--no-deps', '--no-build-isolation', '--wheel-dir',
                  tmp_path / 'dist', source], check=True)
  wheel, = (tmp_path / 'dist').glob('flanet_jax-*.whl')

  env = tmp_path / 'env'
  venv.create(env, with_pip=False)
  python = env / 'bin' / 'python'
  subprocess.run([*pip, '--python', python, 'install', '--no-deps', wheel], check=True)
  # The dependencies come from this interpreter's site-packages, named in a .pth file: such a
  # line only appends the folder to sys.path; the .pth files inside it (this checkout's
  # editable install among them) are not run, so flanet_jax can come from the wheel alone.
  env_site = sysconfig.get_path('purelib', vars={'base': str(env), 'platbase': str(env)})
  pathlib.Path(env_site, 'dependencies.pth').write_text(sysconfig.get_path('purelib') + '\n')

  def run(*command):
    clean = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run(command, cwd=tmp_path, env=clean, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout

  imported = pathlib.Path(run(python, '-c', 'import flanet_jax; print(flanet_jax.__file__)')
                          .strip())
  assert imported.is_relative_to(env_site), imported
  assert '--workdir' in run(env / 'bin' / 'flanet-jax', '--help')
  assert 'flanet_resnet101' in run(env / 'bin' / 'flanet-jax-convert', '--help')
