"""The sans-I/O core of roomsync.

Nothing in this package performs I/O, reads the clock, sleeps, spawns threads or draws
random numbers: time, randomness and ids are passed in. The server (``roomsync.server``),
the client SDK (``roomsync.client``) and the CLI are thin shells over it. A test
(``tests/core/test_purity.py``) fails the build if a module here imports asyncio, socket,
threading, time, os or random.
"""
