"""``admn soak`` for about a minute (the CI length; docs/results.md holds a longer run): the live
graph keeps predicting at the sensors' rate and the report has what it promises."""
import json
import math

import pytest

pytestmark = pytest.mark.ros


def test_a_one_minute_soak_reports_growth_drift_drops_and_rejects(tmp_path):
    from admn_ros.cli import main as admn
    out = tmp_path / 'soak.json'
    code = admn(['soak', '--minutes', '1', '--sample-s', '5', '--json', str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report.get('failure')
    for key in ('rss_growth_pct', 'latency_drift_pct', 'drops', 'rejects'):
        assert key in report, key
    assert math.isfinite(report['rss_growth_pct']) and math.isfinite(report['latency_drift_pct'])
    assert report['minutes'] >= 0.9 and len(report['rss_mb']) >= 10
    assert set(report['rss_mb'][0]) >= {'t_s', 'sensor_source', 'admn_fusion'}
    # 10 Hz for a minute: the graph keeps up (no more than a tenth lost on a busy CI machine).
    assert report['labels'] >= 400 and report['drops'] <= 0.1 * report['labels'], report
    assert report['rejects'] == 0 and report['failure'] is None and not report['restarts']
