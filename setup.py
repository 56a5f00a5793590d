"""ament_python package: installable with pip (editable) and buildable with colcon."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'admn_ros'
HERE = os.path.dirname(os.path.abspath(__file__))

# One console script per node, plus the `admn` command-line tool. colcon installs them into
# lib/admn_ros/ (setup.cfg), where `ros2 run admn_ros <node>` looks.
NODES = ['sensor_source', 'noise_injector', 'admn_fusion', 'budget_manager', 'bag_player', 'evaluator']

# The core folders install inside the package (admn_ros.fusion, admn_ros.datasets, ...): a
# top-level `datasets` would collide with the common ML package of that name.
CORE = ('fusion', 'quality_estimators', 'datasets', 'benchmarks')
PACKAGES = find_packages(include=['admn_ros', 'admn_ros.*']) + [
    f'{PACKAGE}.{p}' for p in find_packages(include=[f'{c}*' for c in CORE])]
PACKAGE_DIR = {f'{PACKAGE}.{c}': c for c in CORE}
# config/: ROS parameter files, training configs, demo scenarios and schedules, sweep configs.
CONFIG_GROUPS = sorted(p.name for p in os.scandir(os.path.join(HERE, 'config')) if p.is_dir())


def files(pattern):
    """Paths for ``data_files`` (relative to the package root, as setuptools wants them). A pattern
    that matches nothing stops the build instead of installing a package without its launch or
    config files (it happens when setup.py runs from another directory)."""
    found = sorted(glob(pattern))
    if not found:
        raise SystemExit(f'setup.py: nothing matches {pattern!r} under {os.getcwd()}; '
                         f'run it from {HERE}')
    return found


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    data_files=[
        ('share/ament_index/resource_index/packages', files(f'resource/{PACKAGE}')),
        (f'share/{PACKAGE}', files('package.xml')),
        (f'share/{PACKAGE}/launch', files('launch/*.launch.py')),
    ] + [(f'share/{PACKAGE}/config/{group}', files(f'config/{group}/*.yaml')) for group in CONFIG_GROUPS],
    package_data={'': ['*.yaml', '*.msg'], 'admn_ros': ['models/*.pt', 'models/SHA256SUMS']},
    include_package_data=True,
    install_requires=['setuptools'],
    extras_require={'test': ['pytest', 'hypothesis']},
    zip_safe=False,
    maintainer='admn_ros maintainers',
    maintainer_email='maintainers@admn-ros.dev',
    description='Adaptive Depth Multimodal Networks (ADMN) for ROS 2',
    license='BSD-3-Clause',
    entry_points={
        'console_scripts': [
            'admn = admn_ros.cli:main',
        ] + [f'{n} = admn_ros.nodes.{n}:main' for n in NODES],
    },
)
