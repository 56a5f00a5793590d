"""Installed import names cannot collide: the core lives under ``admn_ros.*``, never top level.

A venv gets a stand-in for the common ``datasets`` ML package and a (non-editable) install of this
package; both import side by side from outside the checkout. The heavy dependencies (torch, numpy,
OpenCV) come from the test venv's site-packages, appended after the new venv's own.
"""
import ast
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ('fusion', 'quality_estimators', 'datasets', 'benchmarks')
IGNORE = shutil.ignore_patterns('.git', '.venv', '.cache', '.pytest_cache', '.hypothesis',
                                '__pycache__', '*.egg-info', 'build', 'install', 'log', 'runs',
                                'results')


def _python_files():
    for folder in ('admn_ros', 'launch', 'tests', *CORE):
        yield from (ROOT / folder).rglob('*.py')


def test_no_source_imports_a_core_folder_by_its_top_level_name():
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f'{path.relative_to(ROOT)}:{node.lineno} {n}' for n in names
                          if n.split('.')[0] in CORE]
    assert not offenders, 'import these as admn_ros.<name>: ' + ', '.join(offenders)


@pytest.mark.slow
def test_installs_beside_a_package_named_datasets(tmp_path):
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    py = venv / 'bin' / 'python'
    site_dir = subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                              capture_output=True, text=True, check=True).stdout.strip()
    other = tmp_path / 'other' / 'datasets'
    other.mkdir(parents=True)
    (other / '__init__.py').write_text("WHO = 'the other datasets package'\n")
    (other.parent / 'setup.py').write_text(
        "from setuptools import setup\nsetup(name='datasets', version='9.9', packages=['datasets'])\n")
    src = tmp_path / 'src'
    shutil.copytree(ROOT, src, ignore=IGNORE)
    for project in (other.parent, src):    # built as wheels by this venv's pip, into the new venv
        run = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
                              '--no-build-isolation', '--target', site_dir, str(project)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    probe = ('import datasets, admn_ros, admn_ros.datasets.synthetic as syn\n'
             'from admn_ros.paths import models_dir\n'
             'from admn_ros.quality_estimators.inference import shipped_checkpoint\n'
             'print(datasets.WHO); print(admn_ros.__file__); print(syn.__file__)\n'
             'print(shipped_checkpoint("synthetic").is_file())\n')
    # After the venv's own packages, so its `datasets` and `admn_ros` win.
    Path(site_dir, 'test_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    out = subprocess.run([str(py), '-c', probe], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    who, package, synthetic, shipped = out.stdout.splitlines()
    site = Path(package).parent.parent
    assert who == 'the other datasets package'
    assert Path(synthetic) == site / 'admn_ros' / 'datasets' / 'synthetic.py'
    assert shipped == 'True'
    installed = {p.name for p in site.iterdir()}
    assert not installed & {'fusion', 'quality_estimators', 'benchmarks'}
