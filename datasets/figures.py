"""Figures for reports and plots, drawn by Agg without pyplot.

pyplot keeps global state (a current figure, a backend chosen at first import, figures alive until
closed), which leaks memory in long runs and is unsafe off the main thread. Every plot in the
package starts here (tests/test_sweep.py checks that no other module builds a figure). It sits in
the bottom layer of the core so that reports anywhere, core or ROS adapter, can draw with it.
"""
from __future__ import annotations

import importlib
from typing import Tuple


def agg_figure(figsize: Tuple[float, float]):
    """A ``matplotlib.figure.Figure`` with an Agg canvas of its own; save it with ``savefig``.
    matplotlib is imported here, so modules that plot only sometimes stay quick to import."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def preload_plotting() -> None:
    """Import what :func:`agg_figure` needs now (seconds on a busy machine), so a node that plots
    at shutdown does not spend its stop grace period importing; failures are left for plotting
    itself to report."""
    for name in ('matplotlib.figure', 'matplotlib.backends.backend_agg'):
        try:
            importlib.import_module(name)
        except Exception:
            return
