"""JWT access tokens: mint and verify (SPEC §3).

Tokens are compact JWS, HS256 only, with the signing key named by the ``kid`` header so
keys can rotate: a :class:`TokenService` holds every key still accepted (``kid ->
secret``) and signs with one of them (``active_kid``). Claims:

* ``sub``  the actor (optional),
* ``room`` the rooms the token is good for: an exact room id, ``prefix*`` or ``*``,
* ``caps`` the granted capabilities (data caps and/or control caps, see :mod:`.caps`),
* ``exp``, ``iat`` (seconds since the epoch), ``jti`` (token id, used by ``room revoke``).

Time is injected: :meth:`TokenService.verify` takes ``now_s`` and checks ``exp`` itself,
so tests and the server's clock agree. Every failure is an :class:`AuthError` whose
message starts with ``auth: `` and whose ``reason`` (:class:`~roomsync.core.codes.AuthReason`)
names the check that failed (an expired token raises :class:`TokenExpired`, close 4002);
nothing else escapes, whatever the input string.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from roomsync.core.codes import AuthReason
from roomsync.core.errors import AuthError, TokenExpired
from roomsync.core.types import ROOM_ID_RE

from .caps import validate_cap

__all__ = [
    "ALGORITHM",
    "MAX_IAT_SKEW_S",
    "MAX_TOKEN_CHARS",
    "MIN_SECRET_BYTES",
    "Claims",
    "TokenService",
    "check_room",
    "room_matches",
    "validate_room_pattern",
]

#: The only signing algorithm accepted (anything else, ``none`` first, is refused).
ALGORITHM = "HS256"
#: A token issued more than this many seconds in the future is "not yet valid".
MAX_IAT_SKEW_S = 60
#: HS256 keys shorter than this are refused (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32
#: Longer strings are refused unparsed, so a hostile peer cannot make us decode megabytes.
MAX_TOKEN_CHARS = 16384

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_ROOM_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{0,127}")
_JWS = jwt.PyJWS(algorithms=[ALGORITHM])


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of a token. ``kid`` is the key id from the token header."""

    sub: str | None
    room: str
    caps: tuple[str, ...]
    exp: int | None
    iat: int | None
    jti: str | None
    kid: str | None
    #: Every claim of the token's payload as sent (an app's own claims included), for
    #: app hooks (``docs/hooks.md``).
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)


def validate_room_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a room id, ``prefix*`` or ``*``; else raise ValueError."""
    if pattern.endswith("*"):
        ok = _ROOM_PREFIX_RE.fullmatch(pattern[:-1]) is not None
    else:
        ok = ROOM_ID_RE.fullmatch(pattern) is not None
    if not ok:
        raise ValueError(
            f"invalid room pattern {pattern!r}: expected a room id, '<prefix>*' or '*'"
        )
    return pattern


def room_matches(pattern: str, room: str) -> bool:
    """True when a token's ``room`` claim ``pattern`` admits ``room``.

    ``*`` admits every room, ``prefix*`` every room starting with ``prefix``, anything
    else only the room with exactly that id.
    """
    if pattern.endswith("*"):
        return room.startswith(pattern[:-1])
    return pattern == room


def check_room(claims: Claims, room: str) -> None:
    """Raise ``AuthError("auth: token not valid for room '<room>'")`` (reason
    ``WRONG_ROOM``) unless it matches."""
    if not room_matches(claims.room, room):
        raise AuthError(f"token not valid for room '{room}'", reason=AuthReason.WRONG_ROOM)


def _b64url_decode(segment: str, name: str) -> bytes:
    if _B64URL_RE.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise AuthError(f"malformed token: {name} is not base64url", reason=AuthReason.MALFORMED)
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise AuthError(
            f"malformed token: {name} is not base64url", reason=AuthReason.MALFORMED
        ) from exc


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and bad JSON; RecursionError absurdly deep nesting.
        raise AuthError(
            f"malformed token: {name} is not JSON", reason=AuthReason.MALFORMED
        ) from exc
    if not isinstance(value, dict):
        raise AuthError(
            f"malformed token: {name} is not a JSON object", reason=AuthReason.MALFORMED
        )
    return value


def _split(token: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode the header and claims of a compact JWS without checking anything else."""
    if not isinstance(token, str):
        raise AuthError(
            f"malformed token: expected a string, got {type(token).__name__}",
            reason=AuthReason.MALFORMED,
        )
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError(
            f"malformed token: longer than {MAX_TOKEN_CHARS} characters",
            reason=AuthReason.MALFORMED,
        )
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError(
            f"malformed token: expected 3 dot-separated segments, got {len(parts)}",
            reason=AuthReason.MALFORMED,
        )
    header = _json_object(_b64url_decode(parts[0], "header"), "header")
    claims = _json_object(_b64url_decode(parts[1], "payload"), "payload")
    _b64url_decode(parts[2], "signature")
    return header, claims


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(
            f"malformed token: claim '{name}' must be a number of seconds",
            reason=AuthReason.MALFORMED,
        )
    # A fractional NumericDate is rounded down: an exp moves earlier, never later.
    return math.floor(value)


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None or isinstance(value, str):
        return value
    raise AuthError(
        f"malformed token: claim '{name}' must be a string", reason=AuthReason.MALFORMED
    )


class TokenService:
    """Mints and verifies tokens with a set of HS256 keys (``kid -> secret``).

    ``active_kid`` names the key that signs new tokens (default: the first key). Every
    configured key verifies, so rotation is: add the new key and make it active, wait
    until tokens signed with the old one have expired, then remove the old key.
    Raises ValueError on construction for an empty key set, an unknown ``active_kid`` or
    a secret shorter than :data:`MIN_SECRET_BYTES` bytes.
    """

    __slots__ = ("_active_kid", "_keys")

    def __init__(self, keys: Mapping[str, str], active_kid: str | None = None) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        for kid, secret in keys.items():
            if not kid:
                raise ValueError("signing key ids must not be empty")
            size = len(secret.encode("utf-8"))
            if size < MIN_SECRET_BYTES:
                raise ValueError(
                    f"signing key {kid!r} is {size} bytes; HS256 needs at least "
                    f"{MIN_SECRET_BYTES} (RFC 7518 §3.2)"
                )
            try:
                jwt.encode({}, secret, algorithm=ALGORITHM)
            except jwt.InvalidKeyError as exc:
                raise ValueError(f"signing key {kid!r} is not usable for HS256: {exc}") from exc
        if active_kid is None or active_kid == "":
            active_kid = next(iter(keys))
        if active_kid not in keys:
            raise ValueError(f"active kid {active_kid!r} is not among the configured keys")
        self._keys = dict(keys)
        self._active_kid = active_kid

    @property
    def active_kid(self) -> str:
        """The key id that signs new tokens."""
        return self._active_kid

    @property
    def kids(self) -> tuple[str, ...]:
        """Every key id that still verifies, in configuration order."""
        return tuple(self._keys)

    def mint(
        self,
        *,
        room: str,
        caps: Iterable[str],
        ttl_s: int,
        now_s: int,
        actor: str | None = None,
        jti: str | None = None,
    ) -> str:
        """A signed token for ``room`` (id, ``prefix*`` or ``*``) valid ``ttl_s`` seconds.

        ``jti`` defaults to a random UUID4 in hex. ``sub`` is omitted when ``actor`` is
        None. ValueError on a bad room pattern, a bad cap or a non-positive ``ttl_s``.
        """
        validate_room_pattern(room)
        cap_list = [validate_cap(cap) for cap in caps]
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        payload: dict[str, Any] = {}
        if actor is not None:
            payload["sub"] = actor
        payload.update(
            room=room,
            caps=cap_list,
            exp=now_s + ttl_s,
            iat=now_s,
            jti=jti if jti is not None else uuid.uuid4().hex,
        )
        return jwt.encode(
            payload,
            self._keys[self._active_kid],
            algorithm=ALGORITHM,
            headers={"kid": self._active_kid},
        )

    @staticmethod
    def inspect(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The header and claims of ``token``, NOT verified (for ``roomsync token inspect``).

        Raises ``AuthError("auth: malformed token: ...")`` when it is not a compact JWS
        with JSON-object header and payload.
        """
        return _split(token)

    def _secret_for(self, header: Mapping[str, Any]) -> str:
        """Check ``alg`` and resolve ``kid`` to its secret (the checks before the signature)."""
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise AuthError(
                f"unsupported algorithm '{alg if alg is not None else ''}'",
                reason=AuthReason.UNSUPPORTED_ALG,
            )
        kid = header.get("kid")
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise AuthError("unknown kid ''", reason=AuthReason.UNKNOWN_KID)
        if not isinstance(kid, str):
            raise AuthError(
                "malformed token: header 'kid' must be a string", reason=AuthReason.MALFORMED
            )
        secret = self._keys.get(kid)
        if secret is None:
            raise AuthError(f"unknown kid '{kid}'", reason=AuthReason.UNKNOWN_KID)
        return secret

    def _check_signature(self, token: str, secret: str) -> None:
        try:
            _JWS.decode_complete(token, secret, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError as exc:
            raise AuthError("bad signature", reason=AuthReason.BAD_SIGNATURE) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}", reason=AuthReason.MALFORMED) from exc

    def verify(self, token: str, *, now_s: float) -> Claims:
        """Check ``token`` completely (except the room: see :func:`check_room`).

        In order: shape, algorithm (HS256 only), key id, signature, claim types,
        ``exp`` (``now_s >= exp`` is expired: :class:`TokenExpired`) and ``iat``/``nbf``
        (more than :data:`MAX_IAT_SKEW_S` ahead of ``now_s``: not yet valid). ``room``
        (a string) and ``caps`` (a list of strings) are required; ``exp`` is optional.
        """
        header, raw = _split(token)
        self._check_signature(token, self._secret_for(header))
        room = raw.get("room")
        if not isinstance(room, str) or not room:
            raise AuthError("missing claim 'room'", reason=AuthReason.MISSING_CLAIM)
        caps = raw.get("caps")
        if not isinstance(caps, list) or not all(isinstance(cap, str) for cap in caps):
            raise AuthError("missing claim 'caps'", reason=AuthReason.MISSING_CLAIM)
        claims = Claims(
            sub=_optional_str(raw, "sub"),
            room=room,
            caps=tuple(caps),
            exp=_numeric_date(raw, "exp"),
            iat=_numeric_date(raw, "iat"),
            jti=_optional_str(raw, "jti"),
            kid=header.get("kid"),
            extra=raw,
        )
        if claims.exp is not None and now_s >= claims.exp:
            raise TokenExpired("token expired")
        nbf = _numeric_date(raw, "nbf")
        for start in (claims.iat, nbf):
            if start is not None and start > now_s + MAX_IAT_SKEW_S:
                raise AuthError("token not yet valid", reason=AuthReason.NOT_YET_VALID)
        return claims

    def verifies(self, token: str) -> bool:
        """True when ``token`` is well formed, HS256, of a known kid and correctly signed.

        Claims and expiry are ignored: this answers "did one of our keys sign this?"
        (``token inspect``, revocation tooling).
        """
        try:
            header, _ = _split(token)
            self._check_signature(token, self._secret_for(header))
        except AuthError:
            return False
        return True
