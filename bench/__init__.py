"""Benchmarks for roomsync (not part of the installed package)."""
