"""server/metrics.py: the hot-path tallies and samples reach every reader of the registry
(a scrape, ``get_sample_value``) as if they were prometheus_client metrics themselves."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from roomsync.server.metrics import SAMPLES_FOLD, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_tallies_are_folded_before_every_collection() -> None:
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    metrics.deliveries.inc(3)
    metrics.msg_out("ack", 2)
    metrics.msg_in("pack")
    metrics.msg_in("pack")
    assert get("roomsync_deliveries_total") == 3
    assert get("roomsync_messages_total", {"direction": "out", "type": "ack"}) == 2
    assert get("roomsync_messages_total", {"direction": "in", "type": "pack"}) == 2
    metrics.deliveries.inc()  # folded again, not twice
    metrics.changes_applied.inc(5)
    scraped = samples(metrics)
    assert scraped[("roomsync_deliveries_total", ())] == 4
    assert scraped[("roomsync_changes_applied_total", ())] == 5
    assert ("roomsync_deliveries_created", ()) in scraped  # the same series as a Counter's
    assert get("roomsync_deliveries_total") == 4


def test_message_types_a_peer_invents_stay_one_series() -> None:
    metrics = Metrics()
    for type_ in ("x1", "x2", "pack", "x3"):
        metrics.msg_in(type_)
    get = metrics.registry.get_sample_value
    assert get("roomsync_messages_total", {"direction": "in", "type": "invalid"}) == 3
    assert get("roomsync_messages_total", {"direction": "in", "type": "pack"}) == 1
    assert get("roomsync_messages_total", {"direction": "in", "type": "x1"}) is None


def test_samples_are_observed_at_collection_or_when_the_list_fills() -> None:
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    metrics.persist.observe(0.0002)
    metrics.persist.observe(0.3)
    assert get("roomsync_persist_seconds_count") == 2
    assert get("roomsync_persist_seconds_bucket", {"le": "0.00025"}) == 1
    assert get("roomsync_persist_seconds_bucket", {"le": "0.25"}) == 1
    assert get("roomsync_persist_seconds_sum") == pytest.approx(0.3002)
    for _ in range(SAMPLES_FOLD):
        metrics.pack_apply.observe(0.001)
    assert len(metrics.pack_apply.pending) == 0  # folded by itself: the list stays small
    # ... straight into the histogram, before anyone collected
    direct = {s.name: s.value for s in metrics.pack_apply.histogram.collect()[0].samples}
    assert direct["roomsync_pack_apply_seconds_count"] == SAMPLES_FOLD
