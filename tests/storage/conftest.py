"""Let pytest explain failed asserts inside the published store contract."""

from __future__ import annotations

import sys

import pytest

# Only possible before the first import; a module imported earlier keeps plain asserts.
if "roomsync.testing.store_contract" not in sys.modules:
    pytest.register_assert_rewrite("roomsync.testing.store_contract")
