"""Authentication and authorization: JWT tokens, capabilities, signing keys (SPEC §3).

``TokenService`` mints and verifies HS256 tokens (time injected); ``negotiate`` and
``covers`` decide what a session or an operator may do; ``load_or_create_keys`` gives a
zero-configuration server its signing key.
"""

from __future__ import annotations

from .caps import (
    DATA_CAPS,
    SUPPORTED_DATA_CAPS,
    covers,
    is_control_cap,
    negotiate,
    parse_caps,
    validate_cap,
)
from .keyfile import (
    load_keys,
    load_or_create_keys,
    parse_keys_env,
    resolve_signing_keys,
    signing_keys,
)
from .tokens import Claims, TokenService, check_room, room_matches, validate_room_pattern

__all__ = [
    "DATA_CAPS",
    "SUPPORTED_DATA_CAPS",
    "Claims",
    "TokenService",
    "check_room",
    "covers",
    "is_control_cap",
    "load_keys",
    "load_or_create_keys",
    "negotiate",
    "parse_caps",
    "parse_keys_env",
    "resolve_signing_keys",
    "room_matches",
    "signing_keys",
    "validate_cap",
    "validate_room_pattern",
]
