"""roomsync against its peers (y-websocket, Hocuspocus, pycrdt-websocket, a raw ceiling).

See bench/peers/README.md; run with ``python -m bench.peers run``.
"""
