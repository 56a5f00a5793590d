"""Paths in written results, made independent of the machine that wrote them.

Lives at the bottom of the core (it imports nothing of the package) so that every writer of
results, from evaluation to benchmarks, can use it without an import cycle.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

# The folder the package's code lives in: the checkout root from a source tree, the installed
# package folder otherwise. Paths under it are written relative to it.
_BASE = Path(__file__).resolve().parents[1]


def portable(value: Any) -> Any:
    """``value`` with every absolute path made machine-independent, recursively through dicts,
    lists and tuples: relative inside the package's tree, from ``~`` under the home folder, from
    ``<tmp>`` under the temporary folder; ``folder:/abs/path`` specs likewise. A committed result
    says which model and data it used without naming the machine it ran on."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str):
        scheme, sep, rest = value.partition(':')
        if sep and scheme.isidentifier() and rest.startswith(os.sep):
            return f'{scheme}:{_portable_path(rest)}'
        if value.startswith(os.sep):
            return _portable_path(value)
    return value


def _portable_path(text: str) -> str:
    path = Path(text)
    for base, prefix in ((_BASE, ''), (Path.home(), '~'), (Path(tempfile.gettempdir()), '<tmp>')):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return str(Path(prefix) / rel) if prefix else str(rel)
    return text
