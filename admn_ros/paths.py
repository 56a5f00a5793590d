"""Where the package's files are, under its old name for the ROS adapter and users; the answers
live in the core (:mod:`admn_ros.datasets.package_paths`), which must not import the adapter."""
from admn_ros.datasets.package_paths import (PACKAGE, PACKAGE_DIR, checkout_root, config_dir,
                                             launch_dir, models_dir, share_dir)

__all__ = ['PACKAGE', 'PACKAGE_DIR', 'checkout_root', 'config_dir', 'launch_dir', 'models_dir',
           'share_dir']
