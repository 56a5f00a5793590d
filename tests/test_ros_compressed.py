"""admn_fusion over real rclpy with a pruned and a collapsed checkpoint, and with layer failures."""
import pytest

rclpy = pytest.importorskip('rclpy')


from admn_ros import wire  # noqa: E402
from admn_ros.fusion.collapse import collapse_checkpoint  # noqa: E402
from admn_ros.fusion.prune import export_pruned  # noqa: E402
from tests.fixtures_models import make_random_checkpoint  # noqa: E402
from tests.test_ros_fusion import Feeder, allocations, fusion_node, ros  # noqa: E402,F401

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp('compressed_ros')
    src = make_random_checkpoint(d / 'src.pt', controller=True)
    export_pruned(src, d / 'pruned.pt', 2, 'every_other')
    collapse_checkpoint(src, d / 'collapsed.pt', blocks=1, rounds=1, epochs=0)
    return {'source': d / 'src.pt', 'pruned': d / 'pruned.pt', 'collapsed': d / 'collapsed.pt'}


@pytest.mark.parametrize('kind,depth', [('pruned', 2), ('collapsed', 4)])
def test_the_node_runs_a_pruned_or_collapsed_checkpoint(ros, models, kind, depth):
    h = ros()
    node = fusion_node(h, models[kind], policy='admn', budget=1.0, budget_from_topic=False)
    assert node.engine.depth == depth
    got = h.listen(wire.output_class(wire.ALLOCATION), wire.ALLOCATION)
    preds = h.listen(wire.output_class(wire.PREDICTION), wire.PREDICTION)
    Feeder(h).run(15, until=lambda: len(got) >= 3 and len(preds) >= 3)
    assert len(preds) >= 3
    assert all(sum(a['layers'].values()) == 3 * depth for a in allocations(got))


def test_layer_fault_rate_knocks_out_chosen_blocks_in_the_node(ros, models):
    h = ros()
    fusion_node(h, models['source'], policy='full', budget=1.0, budget_from_topic=False,
                layer_fault_rate=0.5)
    got = h.listen(wire.output_class(wire.ALLOCATION), wire.ALLOCATION)
    Feeder(h).run(20, until=lambda: len(got) >= 12)
    totals = [sum(a['layers'].values()) for a in allocations(got)]
    assert len(totals) >= 12
    # The full policy chooses all 12 blocks; about half of them fail on each frame.
    assert max(totals) < 12 and 3 <= sum(totals) / len(totals) <= 9, totals
