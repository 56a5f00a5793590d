"""ApproxSync follows the Python message_filters ApproximateTimeSynchronizer contract."""
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from admn_ros.datasets.sync import ApproxSync

MS = 1_000_000
SEC = 1_000_000_000


def collector():
    out = []
    return out, (lambda *msgs: out.append(msgs))


def test_equal_stamps_queue_one_pairs_in_order():
    out, cb = collector()
    sync = ApproxSync(2, 1, 100 * MS, cb)
    for i in range(20):
        sync.add(0, i * SEC, ('a', i))
        sync.add(1, i * SEC, ('b', i))
    assert out == [(('a', i), ('b', i)) for i in range(20)]
    assert sync.stats.matched == 20 and sync.pending() == [0, 0]


def test_shuffled_pairs_recombine_exactly():
    n = 40
    rng = random.Random(3)
    arrivals = [(k, i * SEC + rng.randint(-20, 20) * MS, (k, i)) for i in range(n) for k in (0, 1)]
    rng.shuffle(arrivals)
    out, cb = collector()
    sync = ApproxSync(2, n, 100 * MS, cb)
    for k, stamp, msg in arrivals:
        sync.add(k, stamp, msg)
    assert sorted(out) == [((0, i), (1, i)) for i in range(n)]
    assert sync.pending() == [0, 0]


def test_spread_equal_to_slop_does_not_match():
    out, cb = collector()
    sync = ApproxSync(2, 10, 100, cb)
    sync.add(0, 1000, 'a')
    assert not sync.add(1, 1100, 'b')       # in the (inclusive) window, spread 100 is not < 100
    assert sync.add(1, 1099, 'c')
    assert out == [('a', 'c')]
    assert sync.pending() == [0, 1]         # the unmatched 'b' stays queued


def test_nearest_candidate_wins_and_older_messages_match_later():
    out, cb = collector()
    sync = ApproxSync(2, 10, 50, cb)
    sync.add(0, 0, 'a0')
    sync.add(0, 40, 'a40')
    sync.add(1, 30, 'b30')                  # 40 is nearer than 0
    sync.add(1, 5, 'b5')                    # the older a0 is still queued and matches now
    assert out == [('a40', 'b30'), ('a0', 'b5')]


def test_product_walk_first_input_slowest_first_valid_tuple_wins():
    # New stamp 1000 on input 2. Candidates by distance: input 0 -> [900, 1115],
    # input 1 -> [1110, 880]. Product order: (900, 1110) spread 210 fails; (900, 880) spread 120
    # passes and is emitted, although (1115, 1110) would be tighter (115) and comes first if
    # input 1 varied slowest.
    out, cb = collector()
    sync = ApproxSync(3, 10, 200, cb)
    for k, t in ((0, 900), (0, 1115), (1, 1110), (1, 880)):
        sync.add(k, t, t)
    assert sync.add(2, 1000, 1000)
    assert out == [(900, 880, 1000)]
    assert sorted(sync.queues[0]) == [1115] and sorted(sync.queues[1]) == [1110]


def test_queue_bound_drops_oldest():
    out, cb = collector()
    sync = ApproxSync(2, 2, 1 * MS, cb)
    for t in (0, 10, 20):
        sync.add(0, t * SEC, t)
    assert sync.stats.dropped == [1, 0]
    assert sync.pending() == [2, 0]
    assert not sync.add(1, 0, 'b0')         # its partner was dropped
    assert sync.add(1, 10 * SEC, 'b10')
    assert out == [(10, 'b10')]


def test_new_message_evicted_by_bound_is_not_emitted():
    out, cb = collector()
    sync = ApproxSync(2, 1, 3, cb)
    sync.add(1, 5, 'b5')
    sync.add(0, 10, 'a10')                  # |10 - 5| > slop: nothing
    assert not sync.add(0, 5, 'a5')         # older than a10, evicted at once
    assert out == [] and sync.pending() == [1, 1]
    assert sync.stats.dropped == [1, 0]


def test_equal_stamp_overwrites():
    out, cb = collector()
    sync = ApproxSync(2, 5, 10, cb)
    sync.add(0, 100, 'first')
    sync.add(0, 100, 'second')
    sync.add(1, 100, 'b')
    assert out == [('second', 'b')]


def test_threads_feeding_inputs_concurrently():
    n = 300
    out, cb = collector()
    sync = ApproxSync(2, n, 10 * MS, cb)

    def feed(k):
        for i in range(n):
            sync.add(k, i * SEC, (k, i))

    threads = [threading.Thread(target=feed, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [((0, i), (1, i)) for i in range(n)]
    assert sync.stats.received == [n, n]


def test_invalid_arguments():
    with pytest.raises(ValueError, match='slop'):
        ApproxSync(2, 10, 0, print)
    with pytest.raises(ValueError, match='queue_size'):
        ApproxSync(2, 0, 10, print)
    sync = ApproxSync(2, 10, 10, print)
    with pytest.raises(ValueError, match='out of range'):
        sync.add(2, 0, None)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 500)), max_size=60),
       st.integers(1, 8), st.integers(1, 60))
def test_emitted_sets_respect_slop_and_use_each_message_once(arrivals, queue_size, slop):
    out, cb = collector()
    sync = ApproxSync(3, queue_size, slop, cb)
    for seq, (k, stamp) in enumerate(arrivals):
        sync.add(k, stamp, (k, stamp, seq))
    seen = set()
    for msgs in out:
        assert [m[0] for m in msgs] == [0, 1, 2]          # input order
        stamps = [m[1] for m in msgs]
        assert max(stamps) - min(stamps) < slop
        assert not seen & set(msgs)
        seen |= set(msgs)
    assert sync.stats.matched == len(out)
    assert sum(sync.pending()) + 3 * len(out) + sum(sync.stats.dropped) <= len(arrivals)


def test_far_future_stamps_on_one_input_no_longer_stall_the_sync():
    """Upstream semantics: a full queue of far-future stamps deletes every later valid message
    (the smallest stamp goes first), so nothing matches again. With a horizon they are refused."""
    def run(horizon):
        out, cb = collector()
        sync = ApproxSync(2, 10, 20 * MS, cb, horizon_ns=horizon)
        t = 0
        for _ in range(5):                       # a healthy start
            sync.add(0, t, ('a', t))
            sync.add(1, t, ('b', t))
            t += 100 * MS
        for k in range(10):                      # a camera glitch: ten stamps an hour ahead
            sync.add(0, 3600 * SEC + k * MS, ('a', 'future'))
        before = len(out)
        for _ in range(20):
            sync.add(0, t, ('a', t))
            sync.add(1, t, ('b', t))
            t += 100 * MS
        return len(out) - before, sync.stats.evicted
    assert run(None) == (0, [0, 0])              # the documented upstream stall
    resumed, evicted = run(1 * SEC)
    assert resumed == 20 and evicted == [10, 0]


def test_entries_left_behind_by_every_other_input_are_evicted_and_counted():
    out, cb = collector()
    sync = ApproxSync(3, 100, 20 * MS, cb, horizon_ns=1 * SEC)
    sync.add(0, 0, 'lonely')                     # its partners never come
    for t in range(1, 30):
        stamp = t * 100 * MS
        for i in (1, 2):
            sync.add(i, stamp, (i, stamp))
    assert sync.pending()[0] == 0 and sync.stats.evicted == [1, 0, 0]
    # With input 0's only stamp judged unmatchable, nothing is known of it: 1 and 2 keep waiting
    # (admn_fusion drops a quiet input from the sync after modality_timeout_s).
    assert sync.pending()[1:] == [29, 29]


def test_horizon_must_cover_the_slop():
    with pytest.raises(ValueError, match='horizon_ns'):
        ApproxSync(2, 1, 100 * MS, lambda *a: None, horizon_ns=10 * MS)
