"""The roomsync server: the asyncio shell (sockets, timers, storage and bus I/O) around
:mod:`roomsync.core`, the only server code that does I/O.

Not a public API: nothing here is exported and its modules change without notice. Run a
node with ``roomsync serve``; start one in tests or in an app's own tests with
:mod:`roomsync.testing.server` (``running_server``, ``server_process``).
"""
