"""``roomsync token mint|inspect`` (SPEC §3)."""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from ..auth.caps import parse_caps
from ..auth.keyfile import signing_keys
from ..auth.tokens import TokenService
from ..core.errors import AuthError
from .common import add_config_flags, die, settings_from

_TTL_RE = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``3600``, ``90s``, ``15m``, ``1h``, ``7d`` -> seconds."""
    match = _TTL_RE.fullmatch(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"bad ttl {text!r}: use seconds or 15m, 1h, 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="mint or inspect access tokens")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    mint = tsub.add_parser("mint", help="print a signed token on stdout")
    add_config_flags(mint)
    mint.add_argument("--room", required=True, help="room id, 'prefix*' or '*'")
    mint.add_argument(
        "--caps",
        required=True,
        help="comma-separated caps: read,write,presence,blob,blob-direct,"
        "reconcile or control caps like 'room:*'",
    )
    mint.add_argument("--ttl", type=parse_ttl, default=3600, help="lifetime (3600, 15m, 1h)")
    mint.add_argument("--actor", default=None, help="the token's sub (actor id)")
    mint.set_defaults(run=run_mint)
    insp = tsub.add_parser("inspect", help="show a token's claims and whether it verifies")
    add_config_flags(insp)
    insp.add_argument("token")
    insp.set_defaults(run=run_inspect)


def _service(args: argparse.Namespace) -> TokenService:
    settings = settings_from(args)
    return TokenService(signing_keys(settings))


def run_mint(args: argparse.Namespace) -> int:
    try:
        caps = parse_caps(args.caps)
    except ValueError as exc:
        die(str(exc), code=2)
    token = _service(args).mint(
        room=args.room, caps=caps, ttl_s=args.ttl, now_s=int(time.time()), actor=args.actor
    )
    print(token)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    try:
        header, claims = TokenService.inspect(args.token)
    except AuthError as exc:
        die(exc.message)
    service = _service(args)
    now = time.time()
    verdict: dict[str, Any] = {"header": header, "claims": claims}
    try:
        service.verify(args.token, now_s=now)
        verdict["valid"] = True
    except AuthError as exc:
        verdict["valid"] = False
        verdict["error"] = exc.message
    verdict["signature_ok"] = service.verifies(args.token)
    exp = claims.get("exp")
    if isinstance(exp, int | float):
        verdict["expires_in_s"] = int(exp - now)
        verdict["expires_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
    print(json.dumps(verdict, indent=2, sort_keys=True))
    return 0 if verdict["valid"] else 1
