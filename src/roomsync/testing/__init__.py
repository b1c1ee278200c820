"""The published test kit: what roomsync's own tests use, for apps and ports to use too.

Its API is its modules; import from them. Importing the package imports none of them (some
need test-only dependencies: ``moto[server]``, ``trustme``).

- :mod:`.server`: a real server in-process (``running_server``) or as a subprocess
  (``server_process``), with test settings, tokens and ``wait_until``.
- :mod:`.clock`: :class:`~.clock.FakeClock`, the time every ``now_ms`` reads, moved by the test.
- :mod:`.link`: :class:`~.link.FakeRoom` and :class:`~.link.FakeLink`, client replicas and a
  pure server room (the core's session, handshake and room state) over an in-memory link
  whose frames the test delivers: protocol tests without sockets or sleeps.
- :mod:`.wsclient` and :mod:`.rawws`: protocol-level WebSocket clients, polite and hostile.
- :mod:`.store_contract`, :mod:`.blob_contract`, :mod:`.bus_contract`,
  :mod:`.webhook_contract`: the contract suites
  every store, blob store and bus backend passes.
- :mod:`.faults`: a store whose commits fail on demand.
- :mod:`.load`: fill a room over a real socket; time ``/healthz`` meanwhile.
- :mod:`.reliability`: the reliability suite and its scorecard
  (``python -m roomsync.testing.reliability``).
- :mod:`.control`: call a test server's control plane as an operator (``call``, ``ok``,
  ``refused``).
- :mod:`.moto_server` and :mod:`.tls`: a local S3 and a throwaway certificate authority.
- :mod:`.postgres` and :mod:`.redis`: a throwaway PostgreSQL database and a Redis prefix
  of the test's own (skipped locally, failed under CI, when the service is missing).
- :mod:`.proxy`: a TCP proxy whose connections a test cuts and restores (a service that
  goes away for one client).
"""

__all__ = [
    "blob_contract",
    "bus_contract",
    "clock",
    "control",
    "faults",
    "link",
    "load",
    "moto_server",
    "postgres",
    "proxy",
    "rawws",
    "redis",
    "reliability",
    "server",
    "store_contract",
    "tls",
    "webhook_contract",
    "wsclient",
]
