"""Prometheus metrics of one server (SPEC §7). Every name here is listed in docs/operations.md.

Each :class:`Metrics` owns its own registry, so several servers can live in one process
(tests). Hot paths increment pre-bound children, never ``labels()`` per message. The
metrics counted for every write and every frame (messages, changes applied, deliveries,
broadcast frames, and the apply, persist and broadcast latencies) are :class:`Tally` and
:class:`Samples`: a plain ``+=`` or ``append`` on the event loop's thread, folded into
their prometheus_client metric in one go before every collection (a scrape, or
``registry.get_sample_value``), instead of a lock and four calls per increment.

Cardinality stays bounded whatever peers send and however many rooms a node holds: no
label carries a room, peer or actor (per-room detail is ``room get``'s), and the labels
a peer can influence are folded into known values (:meth:`Metrics.msg_in`,
:meth:`Metrics.closed`). ``tests/ops/test_metrics_series.py`` checks it on a live server.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from ..core.codec import CLIENT_TYPES
from ..core.codes import CloseCode

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

#: Event-loop lag (:mod:`.probes`): from a scheduling hiccup to a loop blocked for seconds.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: ``type`` labels of incoming messages: the protocol's, a binary frame, anything else.
_IN_TYPES = CLIENT_TYPES | {"binary", "invalid"}

#: Close codes counted under their own label: ours and the standard ones (RFC 6455 §7.4.1).
#: Any other code a peer closes with (3000-4999 are free for applications) is ``other``.
_KNOWN_CLOSE_CODES = frozenset({int(c) for c in CloseCode} | set(range(1000, 1016)))

#: name -> help, for the docs test
METRIC_NAMES: dict[str, str] = {}


#: Observations a :class:`Samples` holds at most before it folds them itself.
SAMPLES_FOLD = 256


class Tally:
    """A counter of the hot path: ``inc`` adds to a plain number; :meth:`fold` (before
    every collection) hands what was added since to the prometheus ``counter``.

    Only the event loop's thread increments it (no lock, unlike prometheus_client's)."""

    __slots__ = ("counter", "folded", "n")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.n: float = 0
        self.folded: float = 0

    def inc(self, amount: float = 1) -> None:
        self.n += amount

    def fold(self) -> None:
        n = self.n
        if n != self.folded:
            self.counter.inc(n - self.folded)
            self.folded = n


class Samples:
    """Observations of a histogram of the hot path, kept in a list and observed into the
    prometheus ``histogram`` in one go (before every collection, or every
    :data:`SAMPLES_FOLD` of them, so the list stays small). Event loop's thread only."""

    __slots__ = ("histogram", "pending")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        pending = self.pending
        pending.append(value)
        if len(pending) >= SAMPLES_FOLD:
            self.fold()

    def fold(self) -> None:
        pending, self.pending = self.pending, []
        observe = self.histogram.observe
        for value in pending:
            observe(value)


class _Registry(CollectorRegistry):
    """A registry that folds the :class:`Tally` and :class:`Samples` of its metrics before
    it collects, so every reader (``/metrics``, ``get_sample_value``) sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.folds: list[Tally | Samples] = []

    def collect(self) -> Iterable[Metric]:
        for folded in self.folds:
            folded.fold()
        return super().collect()


class Metrics:
    def __init__(self) -> None:
        self.registry = _Registry()
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            METRIC_NAMES[name] = doc
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            METRIC_NAMES[name] = doc
            return Gauge(name, doc, labels, registry=r)

        def histogram(
            name: str,
            doc: str,
            buckets: tuple[float, ...] = _LATENCY_BUCKETS,
            labels: tuple[str, ...] = (),
        ) -> Histogram:
            METRIC_NAMES[name] = doc
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        self.control_requests = counter(
            "roomsync_control_requests_total",
            "Control-plane requests by family, command and outcome (ok or the reject class).",
            ("family", "command", "outcome"),
        )
        self.control_seconds = histogram(
            "roomsync_control_seconds", "Histogram: control-plane request handling time."
        )
        self.connections = gauge("roomsync_connections", "Open WebSocket connections.")
        self.rooms = gauge("roomsync_rooms_loaded", "Rooms loaded in memory.")
        self.peers = gauge("roomsync_peers", "Welcomed peers across all rooms.")
        self.messages = counter(
            "roomsync_messages_total",
            "WebSocket messages by direction and type.",
            ("direction", "type"),
        )
        self.closes = counter("roomsync_closes_total", "Sessions closed, by close code.", ("code",))
        self.errors = counter("roomsync_errors_total", "error envelopes sent, by code.", ("code",))
        self.auth = counter(
            "roomsync_auth_total",
            "Handshake auth outcomes (ok, anonymous, or the failure).",
            ("outcome",),
        )
        self.handshakes = counter(
            "roomsync_handshakes_total", "Handshakes by result (welcome or refused).", ("result",)
        )
        self.shed = counter(
            "roomsync_connections_shed_total",
            "Connections closed without a hello to make room at the connection cap.",
        )
        self.rate_limited = counter(
            "roomsync_rate_limited_total", "Messages refused by a peer's token bucket."
        )
        self.changes_applied = self._tally(
            counter("roomsync_changes_applied_total", "Changes accepted into room state.")
        )
        self.changes_superseded = counter(
            "roomsync_changes_superseded_total", "Changes acknowledged that lost LWW."
        )
        self.changes_refused = counter(
            "roomsync_changes_refused_total", "Changes refused, by code.", ("code",)
        )
        self.deliveries = self._tally(
            counter("roomsync_deliveries_total", "Changes delivered to peers by broadcast.")
        )
        self.frames_broadcast = self._tally(
            counter("roomsync_broadcast_frames_total", "Broadcast frames written to peers.")
        )
        self.pack_apply = self._samples(
            histogram("roomsync_pack_apply_seconds", "Time to decode and apply one client pack.")
        )
        self.persist = self._samples(
            histogram(
                "roomsync_persist_seconds",
                "Time to commit one batch of accepted changes (one store transaction, "
                "which may carry the batches of several rooms).",
            )
        )
        self.broadcast = self._samples(
            histogram(
                "roomsync_broadcast_seconds",
                "Time from a change's arrival to its broadcast frame being written.",
            )
        )
        # Its value is a callback the node sets (Node.__init__), read at scrape time.
        self.outbound_bytes = gauge(
            "roomsync_outbound_queue_bytes",
            "Bytes queued to all peers (socket buffers and held frames), read at scrape time.",
        )
        self.resyncs = counter(
            "roomsync_resync_required_total", "Peers told to resync, by reason.", ("reason",)
        )
        self.store_errors = counter("roomsync_store_errors_total", "Store operations that failed.")
        self.commit_conflicts = counter(
            "roomsync_commit_conflicts_total",
            "Room commits the store refused because another node had committed first.",
        )
        self.bus_events = counter(
            "roomsync_bus_events_total",
            "Other nodes' commits as this node took them: delivered from the bus, duplicate, "
            "gap or deferred (read from the store instead), fetched (store reads).",
            ("outcome",),
        )
        self.bus_signals = counter(
            "roomsync_bus_signals_total",
            "Control signals between nodes (presence, revocation, policy, room, drain), by "
            "kind and direction.",
            ("kind", "direction"),
        )
        self.nodes_live = gauge(
            "roomsync_nodes_live", "Nodes whose heartbeat in the store's registry is fresh."
        )
        self.room_loads = counter("roomsync_room_loads_total", "Rooms loaded from the store.")
        self.room_unloads = counter("roomsync_room_unloads_total", "Rooms unloaded when idle.")
        self.blob_ops = counter(
            "roomsync_blob_ops_total",
            "Blob operations by operation and outcome.",
            ("op", "outcome"),
        )
        self.presence_updates = counter(
            "roomsync_presence_updates_total", "Presence updates received."
        )
        self.presence_expired = counter(
            "roomsync_presence_expired_total", "Presence entries expired by TTL."
        )
        self.event_loop_lag = histogram(
            "roomsync_event_loop_lag_seconds",
            "How late the event loop ran a timer, sampled every 0.25 s.",
            _LAG_BUCKETS,
        )
        self.hook_calls = counter(
            "roomsync_hook_calls_total",
            "App hook calls by hook and outcome (ok, refused, error, timeout, dropped).",
            ("hook", "outcome"),
        )
        self.hook_seconds = histogram(
            "roomsync_hook_seconds", "Histogram: time an app hook took, by hook.", labels=("hook",)
        )
        self.webhooks = counter(
            "roomsync_webhook_deliveries_total",
            "Webhook delivery attempts by outcome (delivered, retry, failed, cancelled, "
            "store-error).",
            ("outcome",),
        )
        self.webhook_seconds = histogram(
            "roomsync_webhook_seconds", "Histogram: time of one webhook delivery attempt."
        )
        self.ready = gauge(
            "roomsync_ready", "1 when the last readiness check passed (/readyz 200), else 0."
        )
        # Pre-bound children for the hot paths.
        self._in: dict[str, Tally] = {}
        self._out: dict[str, Tally] = {}

    def _tally(self, counter: Counter) -> Tally:
        tally = Tally(counter)
        self.registry.folds.append(tally)
        return tally

    def _samples(self, histogram: Histogram) -> Samples:
        samples = Samples(histogram)
        self.registry.folds.append(samples)
        return samples

    def msg_in(self, type_: str) -> None:
        """Count one incoming message; a type the protocol does not know is ``invalid``
        (peers choose it: it must not become a label value)."""
        child = self._in.get(type_)
        if child is None:
            if type_ not in _IN_TYPES:
                self._tallied("in", "invalid").n += 1
                return
            child = self._in[type_] = self._tallied("in", type_)
        child.n += 1

    def msg_out(self, type_: str, n: int = 1) -> None:
        child = self._out.get(type_)
        if child is None:
            child = self._out[type_] = self._tallied("out", type_)
        child.n += n

    def _tallied(self, direction: str, type_: str) -> Tally:
        """The tally of ``roomsync_messages_total{direction, type}`` (one per pair)."""
        table = self._in if direction == "in" else self._out
        tally = table.get(type_)
        if tally is None:
            tally = table[type_] = self._tally(self.messages.labels(direction, type_))
        return tally

    def closed(self, code: int) -> None:
        """Count one session closed with ``code``; a code neither roomsync nor RFC 6455
        defines (a peer chose it) is ``other``."""
        self.closes.labels(str(code) if code in _KNOWN_CLOSE_CODES else "other").inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
