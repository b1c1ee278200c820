"""Tokens: mint, verify and every refusal of SPEC §3, with the clock injected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.auth.tokens import (
    MAX_TOKEN_CHARS,
    Claims,
    TokenService,
    check_room,
    room_matches,
    validate_room_pattern,
)
from roomsync.core.codes import AuthReason, CloseCode
from roomsync.core.errors import AuthError, TokenExpired

S1 = "s1-" + "a" * 40
S2 = "s2-" + "b" * 40
NOW = 1_700_000_000


@pytest.fixture
def svc() -> TokenService:
    return TokenService({"k1": S1})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A compact JWS with arbitrary header and claims (no real signature)."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), signature]
    )


def signed(claims: dict[str, Any], secret: str = S1, kid: str | None = "k1") -> str:
    """A correctly signed HS256 token with arbitrary claims."""
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def auth_message(excinfo: pytest.ExceptionInfo[AuthError]) -> str:
    return excinfo.value.message


#: Message prefix -> the reason an AuthError with that message must carry.
REASON_BY_PREFIX = {
    "auth: malformed token: ": AuthReason.MALFORMED,
    "auth: unsupported algorithm ": AuthReason.UNSUPPORTED_ALG,
    "auth: unknown kid ": AuthReason.UNKNOWN_KID,
    "auth: bad signature": AuthReason.BAD_SIGNATURE,
    "auth: missing claim ": AuthReason.MISSING_CLAIM,
    "auth: token expired": AuthReason.EXPIRED,
    "auth: token not yet valid": AuthReason.NOT_YET_VALID,
    "auth: token not valid for room ": AuthReason.WRONG_ROOM,
}


def expected_reason(exc: AuthError) -> AuthReason:
    (reason,) = [r for prefix, r in REASON_BY_PREFIX.items() if exc.message.startswith(prefix)]
    return reason


# --- round trip -------------------------------------------------------------------------


def test_mint_verify_round_trip(svc: TokenService) -> None:
    token = svc.mint(
        room="doc-1", caps=["read", "write"], ttl_s=60, now_s=NOW, actor="alice", jti="j1"
    )
    header, raw = TokenService.inspect(token)
    assert header["kid"] == "k1" and header["alg"] == "HS256"
    assert raw == {
        "sub": "alice",
        "room": "doc-1",
        "caps": ["read", "write"],
        "exp": NOW + 60,
        "iat": NOW,
        "jti": "j1",
    }
    claims = svc.verify(token, now_s=NOW + 1.5)
    assert claims == Claims(
        sub="alice",
        room="doc-1",
        caps=("read", "write"),
        exp=NOW + 60,
        iat=NOW,
        jti="j1",
        kid="k1",
    )


def test_mint_defaults(svc: TokenService) -> None:
    token = svc.mint(room="*", caps=[], ttl_s=10, now_s=NOW)
    _, raw = TokenService.inspect(token)
    assert "sub" not in raw
    assert len(raw["jti"]) == 32 and int(raw["jti"], 16) >= 0
    other = svc.mint(room="*", caps=[], ttl_s=10, now_s=NOW)
    assert TokenService.inspect(other)[1]["jti"] != raw["jti"]
    claims = svc.verify(token, now_s=NOW)
    assert claims.sub is None and claims.caps == ()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"room": "bad room"}, "invalid room pattern"),
        ({"room": ""}, "invalid room pattern"),
        ({"caps": ["fly"]}, "invalid capability 'fly'"),
        ({"ttl_s": 0}, "ttl_s must be positive"),
    ],
)
def test_mint_refuses_bad_input(svc: TokenService, kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"room": "r", "caps": ["read"], "ttl_s": 5, "now_s": NOW}
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        svc.mint(**args)


def test_service_construction_errors() -> None:
    with pytest.raises(ValueError, match="at least one signing key"):
        TokenService({})
    with pytest.raises(ValueError, match="is 5 bytes"):
        TokenService({"k1": "short"})
    with pytest.raises(ValueError, match="not among the configured keys"):
        TokenService({"k1": S1}, active_kid="k2")
    with pytest.raises(ValueError, match="must not be empty"):
        TokenService({"": S1})
    with pytest.raises(ValueError, match="not usable for HS256"):
        TokenService({"k1": "ssh-rsa " + "A" * 40})


def test_service_properties() -> None:
    svc = TokenService({"k1": S1, "k2": S2}, active_kid="k2")
    assert svc.active_kid == "k2"
    assert svc.kids == ("k1", "k2")
    assert TokenService({"k1": S1, "k2": S2}).active_kid == "k1"
    assert TokenService({"k1": S1, "k2": S2}, active_kid="").active_kid == "k1"


# --- time ---------------------------------------------------------------------------------


def test_expiry_uses_injected_clock(svc: TokenService) -> None:
    token = svc.mint(room="r", caps=["read"], ttl_s=30, now_s=NOW)
    assert svc.verify(token, now_s=NOW + 29.999).exp == NOW + 30
    with pytest.raises(TokenExpired) as excinfo:
        svc.verify(token, now_s=NOW + 30)
    assert str(excinfo.value) == "auth: token expired"
    assert excinfo.value.close == CloseCode.TOKEN_EXPIRED
    assert isinstance(excinfo.value, AuthError)


def test_token_without_exp_never_expires(svc: TokenService) -> None:
    token = signed({"room": "r", "caps": []})
    assert svc.verify(token, now_s=10**12).exp is None


def test_fractional_dates_round_down(svc: TokenService) -> None:
    token = signed({"room": "r", "caps": [], "exp": NOW + 0.9, "iat": NOW - 0.5})
    claims = svc.verify(token, now_s=NOW - 0.5)
    assert (claims.exp, claims.iat) == (NOW, NOW - 1)
    with pytest.raises(TokenExpired):
        svc.verify(token, now_s=NOW)


def test_not_yet_valid(svc: TokenService) -> None:
    ahead = svc.mint(room="r", caps=[], ttl_s=600, now_s=NOW + 61)
    with pytest.raises(AuthError) as excinfo:
        svc.verify(ahead, now_s=NOW)
    assert str(excinfo.value) == "auth: token not yet valid"
    assert excinfo.value.close == CloseCode.FORBIDDEN
    assert not isinstance(excinfo.value, TokenExpired)
    # Up to 60 s of issuer clock skew is tolerated.
    svc.verify(svc.mint(room="r", caps=[], ttl_s=600, now_s=NOW + 60), now_s=NOW)
    with pytest.raises(AuthError, match="token not yet valid"):
        svc.verify(signed({"room": "r", "caps": [], "nbf": NOW + 120}), now_s=NOW)


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        "e30.!!!.sig",
        "e30.e30.!!!",
        "eyJ.e30.sig",  # header does not decode to JSON
        "W10.e30.sig",  # header is a JSON list
        "e30.W10.sig",  # payload is a JSON list
        "e30.e30.a",  # impossible base64 length
        "é.e30.sig",
        "x" * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_malformed(svc: TokenService, token: str) -> None:
    with pytest.raises(AuthError) as excinfo:
        svc.verify(token, now_s=NOW)
    assert str(excinfo.value).startswith("auth: malformed token: ")
    with pytest.raises(AuthError, match=r"^auth: malformed token: "):
        TokenService.inspect(token)
    assert not svc.verifies(token)


def test_malformed_non_string(svc: TokenService) -> None:
    with pytest.raises(AuthError, match="malformed token: expected a string, got bytes"):
        svc.verify(b"a.b.c", now_s=NOW)  # type: ignore[arg-type]


def test_unknown_kid(svc: TokenService) -> None:
    other = TokenService({"k9": S1})
    token = other.mint(room="r", caps=[], ttl_s=60, now_s=NOW)
    with pytest.raises(AuthError) as excinfo:
        svc.verify(token, now_s=NOW)
    assert str(excinfo.value) == "auth: unknown kid 'k9'"
    assert excinfo.value.close == CloseCode.FORBIDDEN


def test_missing_kid_uses_the_only_key(svc: TokenService) -> None:
    token = signed({"room": "r", "caps": ["read"]}, kid=None)
    assert "kid" not in TokenService.inspect(token)[0]
    claims = svc.verify(token, now_s=NOW)
    assert claims.kid is None and claims.caps == ("read",)


def test_missing_kid_is_ambiguous_with_several_keys() -> None:
    svc = TokenService({"k1": S1, "k2": S2})
    with pytest.raises(AuthError) as excinfo:
        svc.verify(signed({"room": "r", "caps": []}, kid=None), now_s=NOW)
    assert str(excinfo.value) == "auth: unknown kid ''"


def test_kid_must_be_a_string(svc: TokenService) -> None:
    token = forge({"alg": "HS256", "kid": 7}, {"room": "r", "caps": []}, "c2ln")
    with pytest.raises(AuthError, match=r"^auth: malformed token: header 'kid'"):
        svc.verify(token, now_s=NOW)


def test_bad_signature(svc: TokenService) -> None:
    forged = TokenService({"k1": S2}).mint(room="r", caps=["*"], ttl_s=60, now_s=NOW)
    with pytest.raises(AuthError) as excinfo:
        svc.verify(forged, now_s=NOW)
    assert str(excinfo.value) == "auth: bad signature"
    # Swapping in another payload under a genuine signature fails the same way.
    genuine = svc.mint(room="r", caps=["read"], ttl_s=60, now_s=NOW)
    head, _, sig = genuine.split(".")
    payload = _b64(json.dumps({"room": "*", "caps": ["*"]}).encode())
    with pytest.raises(AuthError, match=r"^auth: bad signature$"):
        svc.verify(f"{head}.{payload}.{sig}", now_s=NOW)


@pytest.mark.parametrize(
    ("header", "alg_shown"),
    [
        ({"alg": "none", "kid": "k1"}, "none"),
        ({"alg": "None"}, "None"),
        ({"alg": "HS512", "kid": "k1"}, "HS512"),
        ({"alg": "RS256", "kid": "k1"}, "RS256"),
        ({"kid": "k1"}, ""),
    ],
)
def test_unsupported_algorithm(svc: TokenService, header: dict[str, Any], alg_shown: str) -> None:
    token = forge(header, {"room": "*", "caps": ["*"]})
    with pytest.raises(AuthError) as excinfo:
        svc.verify(token, now_s=NOW)
    assert str(excinfo.value) == f"auth: unsupported algorithm '{alg_shown}'"
    assert not svc.verifies(token)


def test_hs512_signed_with_our_key_is_still_refused(svc: TokenService) -> None:
    token = jwt.encode({"room": "r", "caps": []}, S1 + S1, algorithm="HS512", headers={"kid": "k1"})
    with pytest.raises(AuthError, match=r"^auth: unsupported algorithm 'HS512'$"):
        svc.verify(token, now_s=NOW)


@pytest.mark.parametrize(
    ("claims", "name"),
    [
        ({"caps": []}, "room"),
        ({"room": "", "caps": []}, "room"),
        ({"room": 5, "caps": []}, "room"),
        ({"room": "r"}, "caps"),
        ({"room": "r", "caps": "read"}, "caps"),
        ({"room": "r", "caps": ["read", 1]}, "caps"),
        ({"room": "r", "caps": None}, "caps"),
    ],
)
def test_missing_claim(svc: TokenService, claims: dict[str, Any], name: str) -> None:
    with pytest.raises(AuthError) as excinfo:
        svc.verify(signed(claims), now_s=NOW)
    assert str(excinfo.value) == f"auth: missing claim '{name}'"


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ({"sub": 5}, "sub"),
        ({"jti": ["x"]}, "jti"),
        ({"exp": "soon"}, "exp"),
        ({"exp": True}, "exp"),
        ({"iat": {}}, "iat"),
        ({"nbf": "x"}, "nbf"),
    ],
)
def test_badly_typed_claims_are_malformed(
    svc: TokenService, extra: dict[str, Any], name: str
) -> None:
    with pytest.raises(AuthError, match=rf"^auth: malformed token: claim '{name}'"):
        svc.verify(signed({"room": "r", "caps": [], **extra}), now_s=NOW)


def test_non_finite_exp_is_malformed(svc: TokenService) -> None:
    # json.dumps cannot write Infinity in strict mode, so sign the crafted segments by hand.
    header = _b64(b'{"alg": "HS256", "kid": "k1"}')
    payload = _b64(b'{"room": "r", "caps": [], "exp": Infinity}')
    mac = hmac.new(S1.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(AuthError, match=r"^auth: malformed token: claim 'exp'"):
        svc.verify(f"{header}.{payload}.{_b64(mac)}", now_s=NOW)


def test_unsupported_crit_header_is_malformed(svc: TokenService) -> None:
    token = jwt.encode(
        {"room": "r", "caps": []},
        S1,
        algorithm="HS256",
        headers={"kid": "k1", "crit": ["exp"], "exp": 1},
    )
    with pytest.raises(AuthError, match=r"^auth: malformed token: "):
        svc.verify(token, now_s=NOW)


# --- rotation -----------------------------------------------------------------------------


def test_key_rotation() -> None:
    before = TokenService({"k1": S1})
    old_token = before.mint(room="r", caps=["read"], ttl_s=3600, now_s=NOW)

    during = TokenService({"k1": S1, "k2": S2}, active_kid="k2")
    new_token = during.mint(room="r", caps=["read"], ttl_s=3600, now_s=NOW)
    assert TokenService.inspect(new_token)[0]["kid"] == "k2"
    assert during.verify(old_token, now_s=NOW).kid == "k1"
    assert during.verify(new_token, now_s=NOW).kid == "k2"
    with pytest.raises(AuthError, match=r"^auth: unknown kid 'k2'$"):
        before.verify(new_token, now_s=NOW)

    after = TokenService({"k2": S2})
    assert after.verify(new_token, now_s=NOW).kid == "k2"
    with pytest.raises(AuthError) as excinfo:
        after.verify(old_token, now_s=NOW)
    assert str(excinfo.value) == "auth: unknown kid 'k1'"


# --- inspect / verifies ------------------------------------------------------------------


def test_inspect_does_not_verify(svc: TokenService) -> None:
    token = TokenService({"zz": S2}).mint(room="r", caps=["read"], ttl_s=1, now_s=0)
    header, claims = TokenService.inspect(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": "zz"}
    assert claims["exp"] == 1 and claims["caps"] == ["read"]


def test_verifies_checks_signature_and_kid_only(svc: TokenService) -> None:
    expired = svc.mint(room="r", caps=["read"], ttl_s=1, now_s=0)
    assert svc.verifies(expired)
    assert svc.verifies(signed({"no": "claims"}))
    assert not svc.verifies(TokenService({"k1": S2}).mint(room="r", caps=[], ttl_s=1, now_s=0))
    assert not svc.verifies(TokenService({"k7": S1}).mint(room="r", caps=[], ttl_s=1, now_s=0))
    assert not svc.verifies(forge({"alg": "none", "kid": "k1"}, {"room": "r", "caps": []}))
    assert not svc.verifies("garbage")


# --- rooms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "room", "expected"),
    [
        ("doc-1", "doc-1", True),
        ("doc-1", "doc-10", False),
        ("doc-1", "doc", False),
        ("doc-*", "doc-1", True),
        ("doc-*", "doc-", True),
        ("doc-*", "doc", False),
        ("doc-*", "xdoc-1", False),
        ("*", "anything", True),
        ("*", "a", True),
        ("Doc", "doc", False),
    ],
)
def test_room_matches(pattern: str, room: str, expected: bool) -> None:
    assert room_matches(pattern, room) is expected


def test_check_room(svc: TokenService) -> None:
    claims = svc.verify(svc.mint(room="team-*", caps=[], ttl_s=5, now_s=NOW), now_s=NOW)
    check_room(claims, "team-a")
    with pytest.raises(AuthError) as excinfo:
        check_room(claims, "other")
    assert str(excinfo.value) == "auth: token not valid for room 'other'"
    assert excinfo.value.close == CloseCode.FORBIDDEN


@pytest.mark.parametrize("pattern", ["r", "*", "a*", "A.b_c-9", "x" * 128, "x" * 127 + "*"])
def test_valid_room_patterns(pattern: str) -> None:
    assert validate_room_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "a b", "a*b*", "*a", "x" * 129, "x" * 128 + "*", "é"])
def test_invalid_room_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid room pattern"):
        validate_room_pattern(pattern)


# --- reasons ------------------------------------------------------------------------------


def _refusals(svc: TokenService) -> list[tuple[AuthReason, Any]]:
    expired = svc.mint(room="r", caps=[], ttl_s=1, now_s=NOW - 10)
    ahead = svc.mint(room="r", caps=[], ttl_s=600, now_s=NOW + 600)
    forged = TokenService({"k1": S2}).mint(room="r", caps=[], ttl_s=60, now_s=NOW)
    alien = TokenService({"k9": S1}).mint(room="r", caps=[], ttl_s=60, now_s=NOW)
    good = svc.verify(svc.mint(room="r", caps=[], ttl_s=60, now_s=NOW), now_s=NOW)
    return [
        (AuthReason.EXPIRED, lambda: svc.verify(expired, now_s=NOW)),
        (AuthReason.NOT_YET_VALID, lambda: svc.verify(ahead, now_s=NOW)),
        (AuthReason.MALFORMED, lambda: svc.verify("a.b", now_s=NOW)),
        (
            AuthReason.MALFORMED,
            lambda: svc.verify(signed({"room": "r", "caps": [], "sub": 1}), now_s=NOW),
        ),
        (AuthReason.BAD_SIGNATURE, lambda: svc.verify(forged, now_s=NOW)),
        (AuthReason.UNKNOWN_KID, lambda: svc.verify(alien, now_s=NOW)),
        (AuthReason.UNSUPPORTED_ALG, lambda: svc.verify(forge({"alg": "none"}, {}), now_s=NOW)),
        (AuthReason.MISSING_CLAIM, lambda: svc.verify(signed({"room": "r"}), now_s=NOW)),
        (AuthReason.WRONG_ROOM, lambda: check_room(good, "other")),
    ]


def test_every_refusal_carries_its_reason(svc: TokenService) -> None:
    """The reason is data set where the error is raised; metrics read it, not the text."""
    for reason, refuse in _refusals(svc):
        with pytest.raises(AuthError) as excinfo:
            refuse()
        assert excinfo.value.reason is reason, excinfo.value.message
        assert excinfo.value.reason is expected_reason(excinfo.value)


def test_auth_reasons_are_the_published_metric_labels() -> None:
    """``roomsync_auth_total{outcome}`` values, unchanged since they were matched on text."""
    assert [r.value for r in AuthReason] == [
        "token-expired",
        "bad-signature",
        "unknown-kid",
        "not-valid-for-room",
        "malformed",
        "locked",
        "anonymous",
        "revoked",
        "missing-claim",
        "unsupported-algorithm",
        "not-yet-valid",
        "refused-by-app",
        "other",
    ]


# --- properties ---------------------------------------------------------------------------

_SERVICE = TokenService({"k1": S1, "k2": S2})
_GOOD = _SERVICE.mint(room="r", caps=["read"], ttl_s=60, now_s=NOW)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _verify_or_auth_error(token: str) -> None:
    try:
        claims = _SERVICE.verify(token, now_s=NOW)
    except AuthError as exc:
        assert exc.message.startswith("auth: ")
        assert exc.reason is expected_reason(exc)
    else:
        assert isinstance(claims, Claims)
    assert isinstance(_SERVICE.verifies(token), bool)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_random_strings_only_raise_auth_error(token: str) -> None:
    _verify_or_auth_error(token)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "b64"]), _JSON)
    | st.fixed_dictionaries({"alg": st.just("HS256"), "kid": st.sampled_from(["k1", "k2"])}),
    st.dictionaries(st.sampled_from(["room", "caps", "exp", "iat", "nbf", "sub", "jti"]), _JSON),
    st.text(alphabet="abcXYZ019-_", max_size=50),
)
def test_jwt_shaped_inputs_only_raise_auth_error(
    header: dict[str, Any], claims: dict[str, Any], signature: str
) -> None:
    _verify_or_auth_error(forge(header, claims, signature))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(_GOOD) - 1), st.characters())
def test_mutated_tokens_only_raise_auth_error(index: int, char: str) -> None:
    _verify_or_auth_error(_GOOD[:index] + char + _GOOD[index + 1 :])
