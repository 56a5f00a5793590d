"""Where a benchmark's result goes: ``X.json`` and, with a table, ``X.md`` beside it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from admn_ros.datasets.portable_paths import portable


def write_result(result: dict, json_path: Union[str, os.PathLike], table: Optional[str] = None) -> None:
    """Write ``result`` (paths made :func:`portable`) as JSON (indent 2, trailing newline, UTF-8) to ``json_path``, creating its
    folder, and ``table`` (markdown) to the same path with the ``.md`` suffix when one is given.
    Prints nothing: each benchmark decides what it shows."""
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(result), indent=2) + '\n', encoding='utf-8')
    if table is not None:
        path.with_suffix('.md').write_text(table.rstrip('\n') + '\n', encoding='utf-8')
