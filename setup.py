"""ament_python package: installable with pip (editable) and buildable with colcon."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'admn_ros'

# One console script per node, plus the `admn` command-line tool.
NODES = ['sensor_source', 'noise_injector', 'admn_fusion', 'budget_manager', 'bag_player', 'evaluator']

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=['admn_ros*', 'fusion*', 'quality_estimators*', 'datasets*', 'benchmarks*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml')),
    ],
    package_data={'': ['*.yaml', '*.msg']},
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
        ] + [f'{n} = admn_ros.nodes.{n}:main' for n in NODES if os.path.exists(f'admn_ros/nodes/{n}.py')],
    },
)
