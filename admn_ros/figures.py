"""The figure helper, kept under its old name for the ROS adapter's reports; it lives in the core
(:mod:`admn_ros.datasets.figures`), which must not import this package's adapter modules."""
from admn_ros.datasets.figures import agg_figure, preload_plotting

__all__ = ['agg_figure', 'preload_plotting']
