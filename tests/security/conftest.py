"""Fixtures of the hostile-client suite: a tiny real filesystem that fills up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roomsync.testing.faults import tmpfs


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted for this test (root only: CI and this machine run as root)."""
    with tmpfs(tmp_path / "tmpfs", size="3m", why="the full-disk tests") as mount:
        yield mount
