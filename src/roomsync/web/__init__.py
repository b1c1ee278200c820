"""The built web apps (``demo/``, ``inspect/``), package data served by
:mod:`roomsync.server.web`; their sources are ``clients/demo`` and ``clients/inspector``."""
