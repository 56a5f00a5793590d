"""Where benchmark results go (benchmarks/report.py), and the tables of the benchmarks no test runs
(they take minutes): built from small hand-made results."""
import json

from admn_ros.benchmarks import resize_on_load, transfer
from admn_ros.benchmarks.report import write_result


def table_rows(md: str):
    """The cells of every markdown table row (the separator rows left out)."""
    return [[c.strip() for c in line.strip().strip('|').split('|')]
            for line in md.splitlines() if line.startswith('|') and not line.startswith('|---')]


def test_write_result_round_trips_json_and_creates_the_folder(tmp_path):
    result = {'latency_ms': [1.5, 2.25], 'name': 'Mittelwert ± σ', 'nested': {'met': True, 'none': None}}
    path = tmp_path / 'deep' / 'er' / 'bench.json'
    write_result(result, str(path), None)
    text = path.read_text(encoding='utf-8')
    assert json.loads(text) == result
    assert text.endswith('}\n') and '\n  "latency_ms": [' in text      # indent 2, trailing newline
    assert not path.with_suffix('.md').exists()                       # no table, no .md
    assert sorted(p.name for p in path.parent.iterdir()) == ['bench.json']


def test_write_result_puts_the_table_beside_the_json(tmp_path, capsys):
    path = tmp_path / 'out' / 'bench.json'
    table = '| mode | p95 ms |\n|---|---|\n| full ± load | 12.5 |\n'
    write_result({'p95': 12.5}, path, table)
    assert json.loads(path.read_text()) == {'p95': 12.5}
    md = (tmp_path / 'out' / 'bench.md').read_text(encoding='utf-8')
    assert md == table                                                 # one trailing newline, not two
    assert table_rows(md) == [['mode', 'p95 ms'], ['full ± load', '12.5']]
    write_result({'p95': 9.0}, path, '| p95 |\n|---|\n| 9 |')          # a rerun replaces both
    assert json.loads(path.read_text()) == {'p95': 9.0}
    assert (tmp_path / 'out' / 'bench.md').read_text() == '| p95 |\n|---|\n| 9 |\n'
    assert capsys.readouterr().out == ''                               # the caller decides what to print


def test_resize_on_load_table_holds_each_variant_and_its_ratio_to_small():
    result = {'mean_epoch_seconds': {'small': 0.8, 'large': 0.88, 'large_full': 1.6},
              'median_epoch_seconds': {'small': 0.8, 'large': 0.9, 'large_full': 1.6},
              'ratio_large_to_small': 1.1, 'ratio_large_full_to_small': 2.0, 'target_ratio_at_most': 1.2}
    rows = table_rows(resize_on_load.resize_on_load_table(result))
    assert rows[0][0] == 'data' and [r[0] for r in rows[1:]] == list(resize_on_load.VARIANTS)
    by = {r[0]: r for r in rows[1:]}
    assert by['large'][1:] == ['0.880', '0.90', '1.10'] and by['large_full'][3] == '2.00'
    assert 'at most 1.2 (got 1.1)' in resize_on_load.resize_on_load_table(result)


def test_transfer_table_holds_each_seed_the_means_and_the_margins():
    result = {'summary': {'init': {'mean': 0.85, 'sd': 0.05}, 'scratch': {'mean': 0.6, 'sd': 0.1}},
              'runs': [{'seed': 0, 'init': {'test_acc': 0.8}, 'scratch': {'test_acc': 0.5}},
                       {'seed': 1, 'init': {'test_acc': 0.9}, 'scratch': {'test_acc': 0.7}}],
              'margins': {'init_minus_scratch': {'mean': 0.25, 'sd': 0.1}},
              'targets': {'init_minus_scratch': 0.15, 'init_minus_logreg_min': 0.0}}
    md = transfer.transfer_table(result)
    assert table_rows(md) == [['seed', 'init', 'scratch'], ['0', '0.800', '0.500'], ['1', '0.900', '0.700'],
                              ['mean', '0.850 +- 0.050', '0.600 +- 0.100']]
    assert '- init_minus_scratch: 0.250 +- 0.100 (target at least 0.15)' in md.splitlines()


def test_results_name_no_machine_path(tmp_path):
    """Results written here name paths relative to the package tree, ``~`` or ``<tmp>``: a model
    path inside the checkout, a cache under home and a temporary folder spec all lose the machine."""
    from pathlib import Path

    from admn_ros.datasets.portable_paths import portable
    from admn_ros.paths import models_dir

    home_cache = str(Path.home() / '.cache' / 'admn_ros' / 'x.pt')
    result = {'checkpoint': str(models_dir() / 'synthetic.pt'),
              'runs': [{'cache': home_cache}, ('folder:' + str(tmp_path / 'data'),)],
              'relative': 'runs/x.pt', 'note': 'a / b', 'count': 3}
    path = tmp_path / 'bench.json'
    write_result(result, path)
    written = json.loads(path.read_text())
    assert written['checkpoint'].endswith('admn_ros/models/synthetic.pt')
    assert not written['checkpoint'].startswith('/')
    assert written['runs'][0]['cache'] == '~/.cache/admn_ros/x.pt'
    assert written['runs'][1][0].startswith('folder:<tmp>/') and written['runs'][1][0].endswith('/data')
    assert (written['relative'], written['note'], written['count']) == ('runs/x.pt', 'a / b', 3)


def test_committed_results_name_no_machine_path():
    """Every committed result file is free of absolute paths (they were once full of /work/main)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / 'results'
    absolute = re.compile(r'(^|[\s"\'=:(])/(?:tmp|home|root|work|usr|opt|var|mnt)/')
    offenders = [f'{p.relative_to(root)}: {m.group(0)!r}'
                 for p in sorted(root.rglob('*')) if p.suffix in ('.json', '.md', '.csv')
                 for m in [absolute.search(p.read_text(encoding='utf-8'))] if m]
    assert offenders == []
