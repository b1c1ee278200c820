"""The probe behind ``roomsync doctor`` and ``roomsync canary``: observe a live server
step by step, in the runbook's triage order, and judge each step with :mod:`.checks`.

:func:`run_probe` does the I/O and nothing else: HTTP with aiohttp (``/healthz``,
``/readyz``, ``/metrics``, a plain GET of ``/ws/{room}``, blob URL grants, the control
plane through :class:`~roomsync.control.client.ControlClient`), a TLS handshake of its
own for ``https``/``wss`` URLs, and raw WebSocket connections speaking the JSON
envelopes of SPEC §2 (packs encoded with :func:`roomsync.core.codec.pack_data`, blob
uploads and fetches driven through the SDK's own flows, :mod:`roomsync.core.blobflow`).
What it observed goes, as plain data, to :func:`.checks.judge`.

What the probe writes, and what it leaves:

- a probe path under :data:`PROBE_PREFIX` (``/.roomsync-doctor/<random>``), written,
  broadcast, requested back and finally deleted (its tombstone stays in the op log, not in
  the canonical hash);
- two small random blobs (inline and direct). A peer cannot delete a blob (SPEC §4): they
  stay in the room until the room is deleted; the report says so.

The connections subscribe to :data:`PROBE_PREFIX` only, so their catch-up is the probe's
own paths whatever the size of the room. Every wait is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..auth.tokens import TokenService
from ..control.client import ControlClient, ControlRejected
from ..core import blobflow
from ..core import messages as m
from ..core.codec import b64encode, pack_data, parse_server, unpack_data
from ..core.entries import Change
from ..core.errors import AuthError, RoomsyncError
from ..core.limits import WelcomeLimits
from ..core.types import any_prefix_matches, validate_prefix
from . import checks
from .checks import Report, StepResult

DEFAULT_ROOM = "roomsync-doctor"
PROBE_PREFIX = "/.roomsync-doctor"
"""The reserved prefix the probe writes under (and subscribes to)."""
ACTOR = "roomsync-doctor"


@dataclass(frozen=True)
class ProbeOptions:
    """What to probe and how. ``url``: the node's base URL (``http(s)://`` or
    ``ws(s)://``, with the path prefix a proxy forwards, if any). ``ssl_context``: the
    trust for TLS (default: the system's, plus ``cafile``)."""

    url: str
    room: str = DEFAULT_ROOM
    token: str | None = None
    operator_token: str | None = None
    subscribe: tuple[str, ...] = ()
    query: str | None = None
    cafile: str | None = None
    ssl_context: ssl.SSLContext | None = None
    timeout_s: float = 5.0
    #: How long the subscribed peer may lag the other one's broadcast before the
    #: probe path counts as filtered.
    settle_s: float = 0.5
    #: Upload the same two blobs on every run (the canary: a room holds each once, so a
    #: canary that runs every minute does not pile up blobs); else fresh random ones.
    fixed_blobs: bool = False


@dataclass(frozen=True)
class _Urls:
    http: str  # base, no trailing slash
    ws: str  # the /ws/{room} URL
    host: str
    port: int
    tls: bool
    ws_path: str  # the /ws/{room} path, with the URL's prefix
    prefix: str  # the URL's path prefix ("" for none)

    @classmethod
    def parse(cls, url: str, room: str) -> _Urls:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        if scheme not in ("http", "https"):
            raise ValueError(f"URL scheme must be http, https, ws or wss: {url!r}")
        tls = scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if tls else 80)
        path = parts.path.rstrip("/")
        base = urlunsplit((scheme, parts.netloc, path, "", ""))
        ws_path = f"{path}/ws/{quote(room, safe='')}"
        ws = urlunsplit(("wss" if tls else "ws", parts.netloc, ws_path, "", ""))
        return cls(base, ws, host, port, tls, ws_path, path)


def ssl_context_for(opts: ProbeOptions) -> ssl.SSLContext:
    """The client TLS context: ``opts.ssl_context``, else the system trust + ``cafile``."""
    if opts.ssl_context is not None:
        return opts.ssl_context
    return ssl.create_default_context(cafile=opts.cafile)


class _Socket:
    """One WebSocket connection of the probe: every text frame it received, in order,
    and the close code once the connection ended."""

    def __init__(self, name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.name = name
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.ended = False
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.welcome: dict[str, Any] | None = None

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        obj = json.loads(msg.data)
                    except ValueError:
                        obj = {"type": "(not JSON)"}
                    self.frames.append(obj if isinstance(obj, dict) else {"type": "(not JSON)"})
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    # The server's code; ws.close_code may say 1006 when the transport
                    # went before our reply (roomsync.testing.wsclient.closed).
                    self.close_code = int(msg.data)
                    break
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    self.close_code = self.close_code or self.ws.close_code or 1006
                    break
                self._changed.set()
        except (aiohttp.ClientError, OSError):
            self.close_code = self.close_code or 1006
        finally:
            self.ended = True
            self._changed.set()

    def mark(self) -> int:
        """The index of the next frame: what a later :meth:`wait` scans from."""
        return len(self.frames)

    async def send(self, obj: dict[str, Any]) -> bool:
        if self.ended or self.ws.closed:
            return False
        try:
            await self.ws.send_json(obj)
        except (aiohttp.ClientError, OSError, RuntimeError):  # closing under us
            return False
        return True

    async def wait(
        self, pred: Callable[[dict[str, Any]], bool], since: int, timeout: float
    ) -> dict[str, Any] | None:
        """The first frame from ``since`` on that ``pred`` accepts; None when the
        connection ended or ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        i = since
        while True:
            while i < len(self.frames):
                frame = self.frames[i]
                i += 1
                if pred(frame):
                    return frame
            remaining = deadline - loop.time()
            if self.ended or remaining <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def ending(self, since: int, timeout: float | None = None) -> dict[str, Any]:
        """What ended a wait: the last error frame since ``since``, the close code, or
        (still open) the timeout."""
        out: dict[str, Any] = {}
        for frame in reversed(self.frames[since:]):
            if frame.get("type") == "error":
                out["error_code"] = frame.get("code")
                out["error_message"] = frame.get("message")
                if frame.get("reason") is not None:
                    out["error_reason"] = frame.get("reason")
                break
        if self.ended:
            out["close"] = self.close_code
        elif timeout is not None:
            out["timeout_s"] = timeout
        return out

    async def close(self) -> None:
        if not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass


def _changes(frame: dict[str, Any]) -> list[Change]:
    if frame.get("type") != "pack":
        return []
    try:
        return unpack_data(frame.get("data"))
    except RoomsyncError:
        return []


def _has_change(change: Change) -> Callable[[dict[str, Any]], bool]:
    def pred(frame: dict[str, Any]) -> bool:
        return any(c.path == change.path and c.key == change.key for c in _changes(frame))

    return pred


def _announces(hash: str) -> Callable[[dict[str, Any]], bool]:
    def pred(frame: dict[str, Any]) -> bool:
        return frame.get("type") == "blob-available" and frame.get("hash") == hash

    return pred


def _is_error_for(frame: dict[str, Any], ref: str) -> bool:
    return frame.get("type") == "error" and frame.get("ref") == ref


class _Probe:
    """One run: the observations and results so far, and the connections it holds."""

    def __init__(
        self,
        opts: ProbeOptions,
        http: aiohttp.ClientSession,
        urls: _Urls,
        ctx: ssl.SSLContext | None,
        random_hex: Callable[[int], str],
        now_ms: Callable[[], int],
    ) -> None:
        self.opts = opts
        self.http = http
        self.urls = urls
        self.ctx = ctx
        self.random_hex = random_hex
        self.now_ms = now_ms
        self.results: dict[str, StepResult] = {}
        self.sockets: list[_Socket] = []
        self.notes: list[str] = []
        self.t = opts.timeout_s
        #: The last change written to each probe path: the next one must order after it
        #: (an equal (ts, counter, actor) would be the same write, SPEC §1).
        self.latest: dict[str, Change] = {}

    # -- bookkeeping -------------------------------------------------------------------------

    def judge(self, step_id: str, observed: dict[str, Any], t0: float | None = None) -> StepResult:
        if t0 is not None:
            ms: float | None = (time.perf_counter() - t0) * 1000
            observed.setdefault("ms", round(ms or 0.0, 2))
        else:
            given = observed.get("ms")
            ms = float(given) if isinstance(given, int | float) else None
        result = checks.judge(step_id, observed, ms)
        self.results[step_id] = result
        return result

    def skip(self, step_id: str, why: str) -> None:
        self.results[step_id] = checks.skip(step_id, why)

    def skip_all(self, step_ids: list[str], why: str) -> None:
        for step_id in step_ids:
            if step_id not in self.results:
                self.skip(step_id, why)

    def passed(self, step_id: str) -> bool:
        r = self.results.get(step_id)
        return r is not None and r.status is checks.Status.PASS

    # -- 1. health ---------------------------------------------------------------------------

    async def get(self, path: str) -> tuple[dict[str, Any], bytes]:
        """GET ``path`` of the base URL: its observation (status, ms or error) and body."""
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.t):
                async with self.http.get(self.urls.http + path, allow_redirects=False) as resp:
                    body = await resp.read()
                    obs: dict[str, Any] = {
                        "status": resp.status,
                        "content_type": resp.headers.get("Content-Type"),
                    }
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return {"path": path, "error": _error_text(exc)}, b""
        obs["path"] = path
        obs["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return obs, body

    async def health(self) -> None:
        obs, body = await self.get("/healthz")
        info = _json_object(body)
        if info is not None and "version" in info:
            obs.update(
                roomsync=True,
                **{
                    k: info.get(k)
                    for k in ("version", "node", "uptime_ms", "connections", "rooms", "draining")
                },
            )
        self.judge("health.healthz", obs)
        if obs.get("error"):
            return
        obs, body = await self.get("/readyz")
        info = _json_object(body)
        if info is not None and isinstance(info.get("checks"), dict):
            obs["checks"] = info["checks"]
            obs["ready"] = info.get("ok")
        self.judge("health.readyz", obs)
        obs, body = await self.get("/metrics")
        if "error" not in obs and obs.get("status") == 200:
            try:
                families = list(text_string_to_metric_families(body.decode("utf-8", "replace")))
            except (ValueError, TypeError) as exc:  # the parser's errors on bad text
                obs["parse_error"] = str(exc)[:200]
            else:
                obs["families"] = len(families)
                obs["roomsync_families"] = sum(
                    1 for f in families if f.name.startswith("roomsync_")
                )
        self.judge("health.metrics", obs)

    # -- 2. connect --------------------------------------------------------------------------

    async def tls(self) -> bool:
        """``connect.tls`` on its own connection; False when TLS failed (the other HTTP
        steps would only fail the same way)."""
        if not self.urls.tls:
            self.skip("connect.tls", "plain http/ws URL: no TLS to check")
            return True
        assert self.ctx is not None
        obs: dict[str, Any] = {"host": self.urls.host, "port": self.urls.port}
        if self.opts.cafile:
            obs["cafile"] = self.opts.cafile
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.t):
                _, writer = await asyncio.open_connection(
                    self.urls.host, self.urls.port, ssl=self.ctx, server_hostname=self.urls.host
                )
        except ssl.SSLCertVerificationError as exc:
            obs.update(verify_code=exc.verify_code, verify_message=exc.verify_message)
        except ssl.SSLError as exc:
            obs["ssl_error"] = exc.reason or str(exc)
        except (OSError, TimeoutError) as exc:
            obs["error"] = _error_text(exc)
        else:
            sslobj = writer.get_extra_info("ssl_object")
            cert = sslobj.getpeercert() if sslobj is not None else None
            obs.update(
                version=sslobj.version() if sslobj is not None else None,
                cipher=(sslobj.cipher() or ("?",))[0] if sslobj is not None else None,
                subject=_name(cert, "subject"),
                issuer=_name(cert, "issuer"),
                not_after=cert.get("notAfter") if cert else None,
            )
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
        result = self.judge("connect.tls", obs, t0)
        return result.status is not checks.Status.FAIL

    async def route(self) -> None:
        obs, body = await self.get(self.urls.ws_path[len(self.urls.prefix) :])
        obs["path"] = self.urls.ws_path
        info = _json_object(body)
        if info is not None:
            obs["body_code"] = info.get("code")
        self.judge("connect.route", obs)

    async def open(
        self, name: str, subscribe: tuple[str, ...] = (PROBE_PREFIX,)
    ) -> tuple[_Socket | None, dict[str, Any], dict[str, Any]]:
        """Upgrade and hello: (the socket, the upgrade's observation, the hello's). The
        socket is None when the upgrade failed; its ``welcome`` None when refused."""
        up: dict[str, Any] = {"path": self.urls.ws_path}
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.t):
                ws = await self.http.ws_connect(
                    self.urls.ws, autoping=True, heartbeat=None, max_msg_size=0
                )
        except aiohttp.WSServerHandshakeError as exc:
            up["status"] = exc.status
            return None, up, {}
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            up["error"] = _error_text(exc)
            return None, up, {}
        up["status"] = 101
        up["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        sock = _Socket(name, ws)
        self.sockets.append(sock)
        hello: dict[str, Any] = {"type": "hello", "v": 1, "actor": ACTOR}
        if self.opts.token:
            hello["token"] = self.opts.token
        hello["subscribe"] = list(subscribe)
        obs: dict[str, Any] = {"subscribe": list(subscribe)}
        t1 = time.perf_counter()
        since = sock.mark()
        await sock.send(hello)
        first = await sock.wait(lambda f: f.get("type") in ("welcome", "error"), since, self.t)
        obs["ms"] = round((time.perf_counter() - t1) * 1000, 2)
        if first is None or first.get("type") != "welcome":
            if first is not None:
                # The close follows the error frame: wait for it (bounded).
                await sock.wait(lambda f: False, sock.mark(), min(self.t, 2.0))
            obs.update(sock.ending(since, self.t))
            return sock, up, obs
        obs["welcome"] = True
        sock.welcome = first
        caps = first.get("caps")
        if isinstance(caps, list) and "read" in caps:
            t2 = time.perf_counter()
            done = await sock.wait(
                lambda f: f.get("type") == "pack" and f.get("done") is True, since, self.t
            )
            obs["catchup_done"] = done is not None
            obs["catchup_ms"] = round((time.perf_counter() - t2) * 1000, 2)
        else:
            obs["catchup_done"] = True  # nothing to catch up without read
        return sock, up, obs

    def token_observation(self) -> dict[str, Any]:
        """The token's claims as written (not verified: the server decides)."""
        token = self.opts.token
        obs: dict[str, Any] = {"token_given": bool(token), "room": self.opts.room}
        if not token:
            return obs
        try:
            _, claims = TokenService.inspect(token)
        except AuthError as exc:
            obs["inspect_error"] = exc.message
            return obs
        obs["claims"] = {
            k: claims.get(k) for k in ("sub", "room", "caps", "exp", "iat", "jti") if k in claims
        }
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            obs["expires_in_s"] = int(exp - self.now_ms() / 1000)
        return obs

    async def connect(self) -> _Socket | None:
        """connect.upgrade, .hello, .welcome, .token on connection A."""
        sock, up, hello = await self.open("A")
        self.judge("connect.upgrade", up)
        if sock is None:
            self.skip_all(
                ["connect.hello", "connect.welcome", "connect.token"],
                "no WebSocket: see connect.upgrade",
            )
            return None
        self.judge("connect.hello", dict(hello))
        token = {**self.token_observation(), **hello}
        welcome = sock.welcome
        if welcome is None:
            self.skip("connect.welcome", "no welcome: see connect.hello / connect.token")
            self.judge("connect.token", token)
            return None
        wobs: dict[str, Any] = {
            k: welcome.get(k)
            for k in ("session", "peer", "node", "actor", "caps", "head", "root", "heartbeat_ms")
        }
        wobs["limits"] = welcome.get("limits")
        wobs["catchup_done"] = hello.get("catchup_done")
        wobs["catchup_ms"] = hello.get("catchup_ms")
        wobs["timeout_s"] = self.t
        wobs["ms"] = hello.get("ms")
        try:
            parse_server(welcome)
        except RoomsyncError as exc:
            wobs["malformed"] = exc.message
        self.judge("connect.welcome", wobs)
        token["caps"] = welcome.get("caps")
        self.judge("connect.token", token)
        return sock

    # -- 3. sync -----------------------------------------------------------------------------

    def change(self, sock: _Socket, path: str, value: bytes | None) -> Change:
        actor = str((sock.welcome or {}).get("actor") or ACTOR)
        return Change(path, self.now_ms(), 0, actor, value)

    def next_change(self, first: Change, value: bytes | None) -> Change:
        """A change of ``first``'s path that wins over every one the probe wrote there."""
        last = self.latest.get(first.path, first)
        return Change(first.path, max(self.now_ms(), last.ts + 1), 0, first.actor, value)

    async def write(self, sock: _Socket, change: Change) -> dict[str, Any]:
        """Send ``change`` in a pack and wait for its ack: the observation."""
        obs: dict[str, Any] = {"path": change.path}
        self.latest[change.path] = change
        since = sock.mark()
        t0 = time.perf_counter()
        if not await sock.send({"type": "pack", "data": pack_data([change])}):
            obs.update(sock.ending(since))
            return obs
        ack = await sock.wait(lambda f: f.get("type") == "ack", since, self.t)
        obs["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        if ack is None:
            if not sock.ended:
                await sock.wait(lambda f: False, sock.mark(), 0.2)  # a close on its way
            obs.update(sock.ending(since, self.t))
            return obs
        seqs = ack.get("seqs")
        if isinstance(seqs, list) and seqs and isinstance(seqs[0], int):
            obs["seq"] = seqs[0]
        if ack.get("refused"):
            obs["refused"] = ack.get("refused")
            obs.update(sock.ending(since))
        return obs

    async def sync(self, a: _Socket, b: _Socket | None, b_obs: dict[str, Any]) -> Change | None:
        """sync.write, .broadcast, .request, .roots, .subscribe; the probe's change, or
        None when nothing was written."""
        path = f"{PROBE_PREFIX}/{self.random_hex(6)}"
        value = json.dumps({"probe": "roomsync doctor", "at": self.now_ms()}).encode()
        change = self.change(a, path, value)
        b_since = b.mark() if b is not None else 0
        t0 = time.perf_counter()
        wrote = self.judge("sync.write", await self.write(a, change))
        if wrote.status is not checks.Status.PASS:
            self.skip_all(
                ["sync.broadcast", "sync.request", "sync.roots", "sync.subscribe"],
                "nothing was written: see sync.write",
            )
            return None
        seq = wrote.observed.get("seq")
        # broadcast
        obs: dict[str, Any] = {"expected_seq": seq}
        if b is None or b.welcome is None:
            obs.update(b_obs, peer_failed=True)
            self.judge("sync.broadcast", obs)
        else:
            got = await b.wait(_has_change(change), b_since, self.t)
            obs["ms"] = round((time.perf_counter() - t0) * 1000, 2)
            if got is not None:
                seqs = [c.seq for c in _changes(got) if c.path == path]
                obs["seq"] = seqs[0] if seqs else None
            else:
                obs.update(b.ending(b_since, self.t))
            self.judge("sync.broadcast", obs)
        # request{paths}
        reader = b if b is not None and b.welcome is not None else a
        obs = {"peer": reader.name, "path": path}
        since = reader.mark()
        t1 = time.perf_counter()
        await reader.send(m.Request(paths=(path,)).to_wire())
        answer = await reader.wait(
            lambda f: (
                (f.get("type") == "pack" and f.get("done") is True) or _is_error_for(f, "request")
            ),
            since,
            self.t,
        )
        obs["ms"] = round((time.perf_counter() - t1) * 1000, 2)
        if answer is None or answer.get("type") == "error":
            obs.update(reader.ending(since, self.t if answer is None else None))
        else:
            obs["answered"] = True
            found = [c for f in reader.frames[since:] for c in _changes(f) if c.path == path]
            obs["found"] = bool(found)
            if found:
                obs["value_matches"] = found[-1].value == value
        self.judge("sync.request", obs)
        await self.roots(a, reader if reader is not a else None)
        await self.subscribe(a, b, change)
        return change

    async def mst_root(self, sock: _Socket) -> str | None:
        caps = (sock.welcome or {}).get("caps") or []
        if "reconcile" not in caps:
            return None
        since = sock.mark()
        await sock.send(m.MstRoot().to_wire())
        got = await sock.wait(
            lambda f: f.get("type") == "mst-root" or _is_error_for(f, "mst-root"), since, self.t
        )
        if got is None or got.get("type") != "mst-root":
            return None
        root = got.get("root")
        return root if isinstance(root, str) else None

    async def roots(self, a: _Socket, b: _Socket | None) -> None:
        """The canonical root as each connection's node and the control plane see it;
        read again (up to 3 times) while they differ, in case other writers moved it."""
        why: list[str] = []
        if "reconcile" not in ((a.welcome or {}).get("caps") or []):
            why.append("no cap `reconcile` for mst-root")
        if not self.opts.operator_token:
            why.append("no --operator-token for room get")
        t0 = time.perf_counter()
        roots: dict[str, str] = {}
        attempts = 0
        while attempts < 3:
            attempts += 1
            roots = {}
            for sock in (a, b):
                if sock is None:
                    continue
                root = await self.mst_root(sock)
                if root is not None:
                    node = (sock.welcome or {}).get("node")
                    roots[f"peer {sock.name} (node {node})"] = root
            if self.opts.operator_token:
                try:
                    info = await self.control_call("room", "get", room=self.opts.room)
                except (ControlRejected, aiohttp.ClientError, OSError, ValueError) as exc:
                    why.append(f"room get failed: {exc}")
                else:
                    if isinstance(info, dict) and isinstance(info.get("root"), str):
                        roots["server (room get)"] = info["root"]
            if len(set(roots.values())) <= 1:
                break
            await asyncio.sleep(0.1)
        self.judge(
            "sync.roots",
            {"roots": roots, "attempts": attempts, "why": "; ".join(why) or None},
            t0,
        )

    async def subscribe(self, a: _Socket, b: _Socket | None, first: Change) -> None:
        prefixes = self.opts.subscribe
        if not prefixes:
            self.skip("sync.subscribe", "no --subscribe: nothing to compare")
            return
        obs: dict[str, Any] = {"prefixes": list(prefixes), "path": first.path}
        try:
            normal = tuple(validate_prefix(p) for p in prefixes)
        except RoomsyncError as exc:
            obs.update(peer_failed=True, error=exc.message)
            self.judge("sync.subscribe", obs)
            return
        obs["expected"] = any_prefix_matches(normal, first.path)
        c, up, hello = await self.open("C", prefixes)
        if c is None or c.welcome is None:
            obs.update({**up, **hello, "peer_failed": True})
            if up.get("status") not in (None, 101):
                obs["error"] = f"upgrade answered HTTP {up['status']}"
            self.judge("sync.subscribe", obs)
            return
        value = json.dumps({"probe": "roomsync doctor", "scope": list(prefixes)}).encode()
        change = self.next_change(first, value)
        c_since = c.mark()
        b_since = b.mark() if b is not None and b.welcome is not None else 0
        t0 = time.perf_counter()
        wrote = await self.write(a, change)
        if not isinstance(wrote.get("seq"), int):
            obs.update({k: v for k, v in wrote.items() if k != "path"}, peer_failed=True)
            self.judge("sync.subscribe", obs)
            return
        if b is not None and b.welcome is not None:
            await b.wait(_has_change(change), b_since, self.t)  # it went out
        obs["settle_s"] = self.opts.settle_s
        got = await c.wait(_has_change(change), c_since, self.opts.settle_s)
        obs["delivered"] = got is not None
        if got is not None:
            obs["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        since = c.mark()
        await c.send(m.Request(paths=(first.path,)).to_wire())
        answer = await c.wait(
            lambda f: f.get("type") == "pack" and f.get("done") is True, since, self.t
        )
        if answer is not None:
            obs["request_found"] = any(
                ch.path == first.path for f in c.frames[since:] for ch in _changes(f)
            )
        self.judge("sync.subscribe", obs)

    # -- 4. blobs ----------------------------------------------------------------------------

    async def blob_frame(self, sock: _Socket, msg: blobflow.BlobFrame) -> blobflow.Answer:
        """Send a flow's frame; its reply (blobflow's rule), or None when none came."""
        since = sock.mark()
        replies = blobflow.REPLIES[msg.type]
        await sock.send(msg.to_wire())
        got = await sock.wait(
            lambda f: (
                (f.get("type") in replies and f.get("hash") == msg.hash)
                or _is_error_for(f, msg.type)
            ),
            since,
            self.t,
        )
        if got is None:
            return None
        try:
            return parse_server(got)
        except RoomsyncError:
            return None

    async def http_step(self, step: blobflow.HttpPut | blobflow.HttpGet) -> blobflow.Answer:
        try:
            async with asyncio.timeout(self.t):
                if isinstance(step, blobflow.HttpPut):
                    async with self.http.request(
                        step.method, step.url, data=step.body, headers=dict(step.headers)
                    ) as resp:
                        return blobflow.HttpResponse(
                            resp.status, await resp.read(), resp.content_length
                        )
                async with self.http.get(step.url) as resp:
                    body = (
                        await resp.read()
                        if step.needs_body(resp.status, resp.content_length)
                        else b""
                    )
                    return blobflow.HttpResponse(resp.status, body, resp.content_length)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return blobflow.HttpFailure(_error_text(exc))

    async def drive(
        self,
        sock: _Socket,
        flow: blobflow.UploadFlow | blobflow.FetchFlow,
        trace: list[tuple[blobflow.Step, blobflow.Answer]],
    ) -> blobflow.Stored | blobflow.Fetched | blobflow.BlobFailed | None:
        """Run a blob flow on ``sock``, recording each step and its answer; None when a
        frame got no reply (the connection ended or the wait timed out)."""
        try:
            step = next(flow)
            while True:
                answer: blobflow.Answer
                if isinstance(step, blobflow.SendFrame):
                    answer = await self.blob_frame(sock, step.message)
                    if answer is None:
                        trace.append((step, None))
                        flow.close()
                        return None
                elif isinstance(step, blobflow.Notice):
                    answer = None
                else:
                    answer = await self.http_step(step)
                trace.append((step, answer))
                step = flow.send(answer)
        except StopIteration as stop:
            outcome: blobflow.Stored | blobflow.Fetched | blobflow.BlobFailed = stop.value
            return outcome

    def blob_salt(self) -> bytes:
        if self.opts.fixed_blobs:
            return b"(fixed: the same bytes every run)"
        return self.random_hex(16).encode()

    async def blobs(self, a: _Socket, b: _Socket | None) -> list[tuple[str, int]]:
        """blobs.inline, .direct, .available, .fetch; the blobs stored (hash, size)."""
        caps = list((a.welcome or {}).get("caps") or [])
        steps = ["blobs.inline", "blobs.direct", "blobs.available", "blobs.fetch"]
        if "blob" not in caps:
            self.skip_all(steps, "the session has no cap `blob` (see connect.welcome)")
            return []
        limits = WelcomeLimits.parse((a.welcome or {}).get("limits") or {})
        stored: list[tuple[str, int]] = []
        b_since = b.mark() if b is not None else 0
        # inline
        data = b"roomsync doctor inline probe " + self.blob_salt()
        hash = blobflow.blob_hash(data)
        obs: dict[str, Any] = {"hash": hash, "size": len(data)}
        since = a.mark()
        t0 = time.perf_counter()
        answer = await self.blob_frame(a, m.BlobUpload(hash, len(data), b64encode(data)))
        if isinstance(answer, m.BlobUploaded):
            obs["result"] = "blob-uploaded"
            stored.append((hash, len(data)))
        elif isinstance(answer, m.UploadRejected):
            obs.update(result="upload-rejected", reason=answer.reason)
        else:
            obs.update(a.ending(since, self.t if answer is None else None))
        self.judge("blobs.inline", obs, t0)
        # direct (or upload-denied and the fallback), through the SDK's flow; the flow is
        # told blob-direct so that request-upload is always sent: the server decides.
        data = b"roomsync doctor direct probe " + self.blob_salt()
        hash = blobflow.blob_hash(data)
        flow_caps = tuple(dict.fromkeys([*caps, "blob-direct"]))
        trace: list[tuple[blobflow.Step, blobflow.Answer]] = []
        since = a.mark()
        t0 = time.perf_counter()
        outcome = await self.drive(
            a, blobflow.upload_flow(hash, data, caps=flow_caps, limits=limits), trace
        )
        obs = _direct_observation(trace, outcome)
        obs.update(hash=hash, size=len(data), negotiated="blob-direct" in caps)
        if outcome is None:
            obs.update(a.ending(since, self.t))
        elif isinstance(outcome, blobflow.Stored):
            stored.append((hash, len(data)))
        self.judge("blobs.direct", obs, t0)
        if b is None or b.welcome is None:
            self.skip_all(["blobs.available", "blobs.fetch"], "no second peer: see sync.broadcast")
            return stored
        if not stored:
            self.skip_all(["blobs.available", "blobs.fetch"], "no blob was stored")
            return stored
        # blob-available on B
        t0 = time.perf_counter()
        seen: dict[str, float] = {}
        for hash, _ in stored:
            got = await b.wait(_announces(hash), b_since, self.t)
            if got is not None:
                seen[hash] = round((time.perf_counter() - t0) * 1000, 2)
        obs = {"expected": [h for h, _ in stored], "seen": seen}
        if len(seen) < len(stored):
            obs.update(b.ending(b_since, self.t))
        self.judge("blobs.available", obs, t0)
        # fetch on B
        b_caps = list(b.welcome.get("caps") or [])
        fetched: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        since = b.mark()
        for hash, _ in stored:
            trace = []
            t1 = time.perf_counter()
            got_blob = await self.drive(b, blobflow.fetch_flow(hash, caps=b_caps), trace)
            item: dict[str, Any] = {"hash": hash, "ms": round((time.perf_counter() - t1) * 1000, 2)}
            if isinstance(got_blob, blobflow.Fetched):
                item.update(ok=True, direct=got_blob.direct)
            elif isinstance(got_blob, blobflow.BlobFailed):
                item.update(ok=False, reason=got_blob.reason)
            else:
                item.update(ok=False, reason="no answer", **b.ending(since, self.t))
            fetched.append(item)
        self.judge("blobs.fetch", {"fetched": fetched}, t0)
        return stored

    # -- 5. control --------------------------------------------------------------------------

    async def control_call(self, family: str, command: str, **payload: Any) -> Any:
        async with asyncio.timeout(self.t):
            client = ControlClient(
                self.urls.http, self.opts.operator_token or "", session=self.http
            )
            return await client.call(family, command, **payload)

    async def control_step(self, step_id: str, family: str, command: str, **payload: Any) -> None:
        obs: dict[str, Any] = {"command": f"{family} {command}", "payload": payload}
        t0 = time.perf_counter()
        try:
            result = await self.control_call(family, command, **payload)
        except ControlRejected as exc:
            obs["reject"] = {
                "class": str(exc.reject_class),
                "code": exc.reject_code,
                "message": exc.message,
                "field": exc.field,
                "required": exc.required,
                "next": exc.next,
            }
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, AttributeError) as exc:
            # No roomsync JSON: a proxy page, a wrong URL (AttributeError: not an object).
            obs["error"] = _error_text(exc)
        else:
            obs["ok"] = True
            obs["detail"] = _control_detail(family, command, result)
        self.judge(step_id, obs, t0)

    async def control(self) -> None:
        control_steps = [f"control.{f}" for f in checks.CONTROL_COMMANDS] + ["control.query_run"]
        if not self.opts.operator_token:
            self.skip_all(control_steps, "no --operator-token: the control plane is not checked")
            return
        room = self.opts.room
        for family, (command, with_room) in checks.CONTROL_COMMANDS.items():
            payload = {"room": room} if with_room else {}
            await self.control_step(f"control.{family}", family, command, **payload)
        if self.opts.query:
            await self.control_step(
                "control.query_run", "query", "run", room=room, name=self.opts.query, limit=1
            )
        else:
            self.skip("control.query_run", "no --query NAME: no query spec to run")

    # -- cleanup -----------------------------------------------------------------------------

    async def cleanup(self, a: _Socket | None, written: Change | None) -> None:
        if written is None or a is None:
            self.skip("cleanup.probe", "nothing was written")
            return
        if a.ended:
            self.skip(
                "cleanup.probe",
                f"connection A closed ({a.close_code}): {written.path} was left in the room",
            )
            return
        tomb = self.next_change(written, None)
        self.judge("cleanup.probe", await self.write(a, tomb))


def _direct_observation(
    trace: list[tuple[blobflow.Step, blobflow.Answer]],
    outcome: blobflow.Stored | blobflow.Fetched | blobflow.BlobFailed | None,
) -> dict[str, Any]:
    """What the direct-upload flow met, step by step (grant, PUT, confirm, fallback)."""
    obs: dict[str, Any] = {}
    for step, answer in trace:
        if isinstance(step, blobflow.SendFrame):
            sent = step.message.type
            if sent == "request-upload":
                if isinstance(answer, m.UploadUrl):
                    obs["grant"] = "upload-url"
                elif isinstance(answer, m.UploadDenied):
                    obs.update(grant="upload-denied", denied_reason=answer.reason)
                elif isinstance(answer, m.Error):
                    obs.update(error_code=answer.code, error_message=answer.message)
            elif sent == "blob-uploaded":
                obs["confirm"] = answer.type if isinstance(answer, m.Message) else None
                if isinstance(answer, m.UploadRejected):
                    obs["confirm_reason"] = answer.reason
            elif sent == "blob-upload":
                obs["fallback"] = "inline"
                obs["fallback_result"] = answer.type if isinstance(answer, m.Message) else None
                if isinstance(answer, m.UploadRejected):
                    obs["fallback_reason"] = answer.reason
                elif isinstance(answer, m.Error):
                    obs["fallback_reason"] = f"{answer.code}: {answer.message}"
        elif isinstance(step, blobflow.HttpPut):
            if isinstance(answer, blobflow.HttpResponse):
                obs["put_status"] = answer.status
            elif isinstance(answer, blobflow.HttpFailure):
                obs["put_error"] = answer.error
        elif isinstance(step, blobflow.Notice):
            obs["notice"] = step.message
    if isinstance(outcome, blobflow.Stored):
        obs.update(stored=True, direct=outcome.direct)
    elif isinstance(outcome, blobflow.BlobFailed):
        obs.update(stored=False, outcome=outcome.reason)
    return obs


def _control_detail(family: str, command: str, result: Any) -> str | None:
    if not isinstance(result, dict):
        return None
    if family == "room":
        return (
            f"head {result.get('head')}, {result.get('count')} entries, "
            f"locked {result.get('locked')}"
        )
    if family == "topology":
        nodes = result.get("nodes") or []
        return f"{len(nodes)} node(s)"
    if family == "tick":
        return f"n {result.get('n')}, interval {result.get('interval_ms')} ms"
    if family == "policy":
        return f"scope {result.get('scope')}"
    for key in ("archives", "queries", "rows"):
        if isinstance(result.get(key), list):
            return f"{len(result[key])} {key}"
    return None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:300]


def _name(cert: dict[str, Any] | None, key: str) -> str | None:
    if not cert or key not in cert:
        return None
    parts = [f"{k}={v}" for rdn in cert[key] for k, v in rdn]
    return ", ".join(parts) or None


async def run_probe(
    opts: ProbeOptions,
    *,
    random_hex: Callable[[int], str] = secrets.token_hex,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> Report:
    """Walk every step against ``opts.url`` and return the report (never raises for
    what the server does; ValueError for a URL it cannot use)."""
    urls = _Urls.parse(opts.url, opts.room)
    started = now_ms() / 1000
    t0 = time.perf_counter()
    ctx = ssl_context_for(opts) if urls.tls else None
    connector = aiohttp.TCPConnector(ssl=ctx if ctx is not None else True, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        probe = _Probe(opts, http, urls, ctx, random_hex, now_ms)
        try:
            await _walk(probe)
        finally:
            for sock in probe.sockets:
                await sock.close()
    if ctx is not None:
        # A closed TLS connection still exchanges close_notify on the loop; let it, or a
        # caller's asyncio.run() ends first and leaks the sockets (aiohttp's advice).
        await asyncio.sleep(0.25)
    return Report(
        url=opts.url,
        room=opts.room,
        results=checks.ordered(probe.results),
        notes=tuple(probe.notes),
        started_at=started,
        duration_ms=(time.perf_counter() - t0) * 1000,
    )


async def _walk(probe: _Probe) -> None:
    later = [s.id for s in checks.STEPS if s.group is not checks.Group.HEALTH]
    if not await probe.tls():
        why = "TLS failed: see connect.tls"
        probe.skip_all([s.id for s in checks.STEPS], why)
        return
    await probe.health()
    if probe.results["health.healthz"].observed.get("error"):
        # No TCP/HTTP answer at all: every other step would fail the same way.
        probe.skip_all(
            [s.id for s in checks.STEPS], "the server is unreachable: see health.healthz"
        )
        return
    await probe.route()
    a = await probe.connect()
    if a is None:
        probe.skip_all(
            [i for i in later if i.startswith(("sync.", "blobs.", "cleanup."))],
            "no welcomed connection: see connect.*",
        )
        await probe.control()
        return
    b, b_up, b_hello = await probe.open("B")
    b_obs = {**b_up, **b_hello}
    if b is None and b_up.get("status") not in (None, 101):
        b_obs["error"] = f"upgrade answered HTTP {b_up['status']}"
    written = await probe.sync(a, b, b_obs)
    lost = "connection A closed ({}): see the step that failed before"
    if a.ended:
        probe.skip_all(
            ["blobs.inline", "blobs.direct", "blobs.available", "blobs.fetch"],
            lost.format(a.close_code),
        )
        stored: list[tuple[str, int]] = []
    else:
        stored = await probe.blobs(a, b)
    await probe.control()
    await probe.cleanup(a, written)
    if stored:
        size = sum(n for _, n in stored)
        same = " (the same bytes on every run: stored once)" if probe.opts.fixed_blobs else ""
        probe.notes.append(
            f"the probe's {len(stored)} blob(s) ({size} bytes){same} stay in room "
            f"{probe.opts.room!r}: a peer cannot delete a blob (SPEC §4); they go when the "
            "room is deleted (`room delete`)"
        )
