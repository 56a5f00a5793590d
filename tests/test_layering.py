"""The core stands below the ROS adapter: ``fusion/``, ``datasets/`` and ``quality_estimators/``
import nothing of ``admn_ros`` but each other, and their dependencies point one way (datasets at
the bottom, then fusion, then quality_estimators).

Read from the source with ``ast``, imports inside functions included, so an import that only runs
on some path counts as much as one at the top of a module.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = 'admn_ros'
# Folders imported as admn_ros.<folder> (the finder in admn_ros/__init__.py, setup.py's package_dir).
CORE_FOLDERS = ('fusion', 'quality_estimators', 'datasets', 'benchmarks')
# The layers checked here; benchmarks sits on top of them with the adapter.
LAYERED = ('datasets', 'fusion', 'quality_estimators')

Edge = Tuple[str, str, str]   # (from folder, to folder, 'file:line module')


def imported_modules(source: str, module: str) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) of every import in ``source``, relative ones resolved against
    ``module`` (the importing module's dotted name); ``from a import b`` yields ``a.b``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = module.split('.')[:-node.level]
                base = '.'.join(parent + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, f'{base}.{alias.name}' if alias.name != '*' else base


def core_modules(folders=LAYERED) -> Iterator[Tuple[Path, str]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob('*.py')):
            # A package's __init__ keeps its name, so `from . import x` resolves to the package.
            yield path, '.'.join([PACKAGE, *path.relative_to(ROOT).with_suffix('').parts])


def scan(modules) -> Tuple[List[str], List[Edge]]:
    """Imports of the adapter (``admn_ros.<not a core folder>``) and folder-to-folder edges."""
    adapter, edges = [], []
    for path, module in modules:
        source_folder = path.relative_to(ROOT).parts[0]
        where = path.relative_to(ROOT)
        for line, name in imported_modules(path.read_text(encoding='utf8'), module):
            parts = name.split('.')
            if parts[0] != PACKAGE or len(parts) < 2:
                continue
            if parts[1] not in CORE_FOLDERS:
                adapter.append(f'{where}:{line} {name}')
            elif parts[1] != source_folder:
                edges.append((source_folder, parts[1], f'{where}:{line} {name}'))
    return adapter, edges


def cycle_edges(edges: List[Edge]) -> List[Edge]:
    """The edges that lie on a cycle of the folder graph (an edge a->b with a path b->...->a)."""
    graph: Dict[str, Set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    return [e for e in edges if e[1] in LAYERED and reaches(e[1], e[0])]


def test_the_scan_sees_imports_of_every_form():
    source = ('import admn_ros.wire\n'
              'from admn_ros import paths, fusion\n'
              'def f():\n    from admn_ros.quality_estimators.inference import load_model\n'
              'from .. import fusion\n'
              'from .sample import take\n')
    found = sorted(imported_modules(source, 'admn_ros.datasets.bags'))
    assert found == [(1, 'admn_ros.wire'), (2, 'admn_ros.fusion'), (2, 'admn_ros.paths'),
                     (4, 'admn_ros.quality_estimators.inference.load_model'),
                     (5, 'admn_ros.fusion'), (6, 'admn_ros.datasets.sample.take')]
    edges = [('datasets', 'fusion', 'x'), ('fusion', 'datasets', 'y'),
             ('quality_estimators', 'fusion', 'z')]
    assert cycle_edges(edges) == edges[:2]


def test_the_core_imports_nothing_of_the_ros_adapter():
    modules = list(core_modules())
    assert len(modules) > 50
    adapter, _ = scan(modules)
    assert not adapter, ('the core imports the ROS adapter (move what it needs into the core and '
                         're-export it from admn_ros):\n  ' + '\n  '.join(adapter))


def test_the_core_folders_import_each_other_one_way():
    _, edges = scan(core_modules())
    assert {(a, b) for a, b, _ in edges} >= {('fusion', 'datasets'), ('quality_estimators', 'fusion')}
    cycles = cycle_edges(edges)
    assert not cycles, ('import cycle between core folders (datasets < fusion < '
                        'quality_estimators):\n  ' + '\n  '.join(f'{a} -> {b}: {w}'
                                                                 for a, b, w in cycles))
