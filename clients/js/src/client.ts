/**
 * The roomsync room client: a live local replica of one room over WebSocket (SPEC §1-5),
 * the TypeScript twin of the Python SDK's `RoomClient` (`roomsync.client`).
 *
 * ```ts
 * import { connect } from "roomsync-client";
 * const room = await connect({ url: "http://127.0.0.1:8787", room: "board-1" });
 * room.on("change", ({ path, value, local }) => render(path, value));
 * room.setJSON("/notes/1", { text: "hello" });
 * await room.flush(); // durable on the server
 * ```
 *
 * Lifecycle (one WebSocket *link* at a time; a {@link ReconnectPolicy} decides after
 * every close): `hello` → `welcome` (caps `["*", "binary"]` by default: everything the
 * token grants plus binary packs) → catch-up from the cursor (or the whole subscribed
 * state) → broadcasts, acks and answers. 1006/1011/1012/4008…: reconnect after a
 * jittered backoff (at least `retry_after_ms` of an `overload`), resume from the
 * cursor. 4001: full resync, by MST reconcile (`catchup: false`, `mst-root`/`mst-get`,
 * then `request{paths}`) when the `reconcile` cap is granted and the whole room is
 * subscribed, else a full catch-up; a failed reconcile falls back to a full catch-up.
 * 4002: `tokenProvider()` then reconnect (stop without one). 1002/4003/4004: stop, the
 * `error` event and every waiter get a {@link ConnectionClosed}.
 *
 * Writes apply locally at once (a `change` event with `local: true`), queue in the
 * offline queue and leave in one pack per microtask turn (up to 4 packs in flight, cut
 * by the welcome's limits); `flush()` resolves when the server acked every write so far
 * (acks come after the commit: durable).
 */

import { ConnectError, ConnectionClosed, RequestRefused, RoomsyncError, BlobRejected, BlobNotFound, BlobFetchFailed, CodecError, type ErrorEnvelope } from "./errors.js";
import { Emitter } from "./events.js";
import { b64decode, b64encode, fromHex, isArrayBuffer, isBytes, sha256, toHex } from "./bytes.js";
import { clientFrame, parseServerFrame } from "./binpack.js";
import { decodePack, encodePack, type Change } from "./postcard.js";
import { EMPTY_ROOT_HEX } from "./mst.js";
import { reconcile as reconcileFlow, reconcileBatched, differing, toRequest, type BatchedResult, type ReconcileResult } from "./reconcile.js";
import { Answer, Replica, type RefusedChange, type Settled, type SupersededChange, type SyncMode } from "./replica.js";
import { ABNORMAL_CLOSURE, Backoff, ReconnectPolicy, type StopReason } from "./reconnect.js";
import { sessionActor, actorAllowed, prefixMatches, validatePath, validatePrefix } from "./paths.js";

export const PROTOCOL_VERSION = 1;
const HANDSHAKE_TIMEOUT_MS = 15_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const MAX_RECONCILE_PASSES = 8;
const PATHS_PER_REQUEST = 1000;
const PATH_BYTES_PER_REQUEST = 256 * 1024;
const FRAME_OVERHEAD = 64;
const INLINE_OVERHEAD = 256;
const SILENT_HEARTBEATS = 3;
const MIN_HEARTBEAT_MS = 100;
const MIN_KEEPALIVE_MS = 50;
const RATE_LIMIT_PAUSE_MS: [number, number] = [250, 5000];

// -- public types --------------------------------------------------------------------------

/** The subset of the WHATWG WebSocket the client uses (browsers' and the `ws` package's). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type Status = "connecting" | "open" | "synced" | "offline" | "closed";

export interface RoomOptions {
  /** Server base URL (`http(s)://host:port`), or a `ws(s)://host/ws/{room}` URL. */
  url: string;
  room: string;
  token?: string;
  /** Called for a fresh token before every reconnect and after 4002 (first too, without `token`). */
  tokenProvider?: () => string | Promise<string>;
  /** Actor id of this replica's writes (default `c-<16 hex>`, or `sub#…` with a token). */
  actor?: string;
  /** Path prefixes to replicate (default `["/"]`). */
  subscribe?: string[];
  /** Caps to request (default: all the token grants). */
  caps?: string[];
  /** Also ask for the opt-in `binary` cap (default true). */
  binary?: boolean;
  /** Reconnect after a close (default true). */
  reconnect?: boolean;
  backoff?: Backoff;
  /** Random floats in [0, 1) for the jitter (default Math.random). */
  random?: () => number;
  /** The WebSocket constructor (default `globalThis.WebSocket`; in Node pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** `fetch` for direct blob transfers (default `globalThis.fetch`). */
  fetch?: typeof fetch;
  /** Bound on the wait for the first welcome (default 10 000; null: none). */
  connectTimeoutMs?: number | null;
  /** Packs in flight at once (default 4). */
  maxInflight?: number;
  /** Where the client logs (default: console; `null` silences it). */
  logger?: Logger | null;
}

export interface Logger {
  debug?(...args: unknown[]): void;
  info?(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/** A change that became visible: `value` null is a delete; `local` for this client's writes. */
export interface ChangeEvent {
  path: string;
  value: Uint8Array | null;
  local: boolean;
  change: Change;
}

export interface PresenceInfo {
  peer: string;
  actor: string;
  state: unknown;
}

export interface PresenceEvent {
  changed: PresenceInfo[];
  left: string[];
}

export interface BlobInfo {
  hash: string;
  size: number;
}

export interface TickInfo {
  n: number;
  at: number;
}

export interface Welcome {
  v: number;
  session: string;
  peer: string;
  room: string;
  caps: string[];
  head: number;
  root: string;
  heartbeat_ms: number;
  limits: Record<string, unknown>;
  presence: unknown[];
  actor?: string;
  node?: string;
  [extra: string]: unknown;
}

export interface RetryWait {
  delayMs: number;
  closeCode: number;
  errorCode: string | null;
  retryAfterMs: number | null;
}

export interface ConnectionStats {
  attempts: number;
  welcomes: number;
  resyncs: number;
  reconciles: number;
  tokenRefreshes: number;
  superseded: number;
  lastCatchupChanges: number;
  closes: [number, string | null][];
  waits: RetryWait[];
}

export interface RoomEvents {
  change: ChangeEvent;
  status: Status;
  presence: PresenceEvent;
  /** A server `error` (session goes on) or the {@link ConnectionClosed} that stopped the client. */
  error: RoomsyncError;
  refused: RefusedChange;
  superseded: SupersededChange;
  "blob-available": BlobInfo;
  tick: TickInfo;
  /** Once, when the client stops for good (also after `close()`). */
  close: ConnectionClosed;
}

// -- helpers -------------------------------------------------------------------------------

/** The WebSocket URL of `room` on the server at `url`. */
export function wsUrl(url: string, room: string): string {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(room)) throw new RangeError(`invalid room id ${JSON.stringify(room)}`);
  const u = new URL(url);
  const scheme = ({ "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" } as Record<string, string>)[u.protocol];
  if (scheme === undefined || !u.host) throw new RangeError(`server URL must be http(s):// or ws(s)://host[:port], got ${url}`);
  let path = u.pathname.replace(/\/+$/, "");
  const parts = path.split("/");
  if ((u.protocol === "ws:" || u.protocol === "wss:") && parts.slice(-2).join("/") === `ws/${room}`) {
    return `${scheme}//${u.host}${path}${u.search}`;
  }
  if (path.endsWith("/ws")) path = path.slice(0, -3);
  return `${scheme}//${u.host}${path}/ws/${room}${u.search}`;
}

class LinkDown extends Error {
  constructor() {
    super("the connection went down");
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
  done: boolean;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const d: Deferred<T> = {
    promise,
    done: false,
    resolve: (v) => {
      if (!d.done) {
        d.done = true;
        resolve(v);
      }
    },
    reject: (e) => {
      if (!d.done) {
        d.done = true;
        reject(e);
      }
    },
  };
  promise.catch(() => undefined); // a waiter may have gone: never an unhandled rejection
  return d;
}

interface Limits {
  maxFrameBytes: number;
  maxPackBytes: number;
  maxChangesPerPack: number;
  blobMaxBytes: number;
  presenceMaxBytes: number;
  presenceTtlMs: number;
}

function parseLimits(limits: Record<string, unknown> | undefined): Limits {
  const get = (name: string, dflt: number): number => {
    const v = limits?.[name];
    return typeof v === "number" && Number.isInteger(v) && v > 0 ? v : dflt;
  };
  return {
    maxFrameBytes: get("max_frame_bytes", 1 << 20),
    maxPackBytes: get("max_pack_bytes", 1 << 20),
    maxChangesPerPack: get("max_changes_per_pack", 10_000),
    blobMaxBytes: get("blob_max_bytes", 0),
    presenceMaxBytes: get("presence_max_bytes", 0),
    presenceTtlMs: get("presence_ttl_ms", 0),
  };
}

function pathChunks(paths: readonly string[]): string[][] {
  const out: string[][] = [];
  let chunk: string[] = [];
  let size = 0;
  for (const p of paths) {
    const n = new TextEncoder().encode(p).length + 4;
    if (chunk.length && (chunk.length >= PATHS_PER_REQUEST || size + n > PATH_BYTES_PER_REQUEST)) {
      out.push(chunk);
      chunk = [];
      size = 0;
    }
    chunk.push(p);
    size += n;
  }
  if (chunk.length) out.push(chunk);
  return out;
}

function tokenSub(token: string | undefined): string | null {
  if (!token) return null;
  try {
    const part = token.split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const claims = JSON.parse(new TextDecoder().decode(b64decode(padded, "token")));
    return typeof claims?.sub === "string" && claims.sub ? claims.sub : null;
  } catch {
    return null;
  }
}

function newActor(random: () => number): string {
  let s = "c-";
  for (let i = 0; i < 16; i++) s += Math.floor(random() * 16).toString(16);
  return s;
}

/** `sha256:<hex>` of `data`: a blob's content address. */
export function blobHash(data: Uint8Array): string {
  return "sha256:" + toHex(sha256(data));
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface BlobCall {
  sent: string;
  hash: string;
  reply: Deferred<Record<string, unknown>>;
}

/** One WebSocket connection and everything waiting on it. */
class Link {
  welcome: Welcome | null = null;
  synced = false;
  closing = false;
  binary = false;
  lastError: ErrorEnvelope | null = null;
  answers = new Map<Answer, Deferred<void>>();
  roots: Deferred<Record<string, unknown>>[] = [];
  nodes: Deferred<Record<string, unknown>>[] = [];
  sketches: Deferred<Record<string, unknown>>[] = [];
  blobCalls: BlobCall[] = [];
  presenceSent = false;
  lastSentMs = 0;
  lastRecvMs = 0;
  catchupChanges = 0;
  limits: Limits = parseLimits(undefined);
  packMaxBytes = 1;
  pauseUntil = 0;
  rateLimited = 0;
  heartbeat: ReturnType<typeof setTimeout> | null = null;
  ended = deferred<{ code: number }>();

  constructor(
    readonly ws: WebSocketLike,
    readonly mode: SyncMode,
  ) {}

  send(obj: Record<string, unknown>): void {
    if (this.closing) throw new LinkDown();
    this.ws.send(JSON.stringify(obj));
    this.lastSentMs = performance.now();
  }

  sendBinary(payload: Uint8Array): void {
    if (this.closing) throw new LinkDown();
    this.ws.send(payload);
    this.lastSentMs = performance.now();
  }

  /** Drop the connection at once, as a network failure would (1006 to the policy). */
  abort(): void {
    if (this.closing && this.ended.done) return;
    this.closing = true;
    const ws = this.ws as WebSocketLike & { terminate?: () => void };
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(1000, "client reconnecting");
    } catch {
      // already closed
    }
    this.ended.resolve({ code: ABNORMAL_CLOSURE });
  }

  failWaiters(): void {
    const down = new LinkDown();
    for (const d of this.answers.values()) d.reject(down);
    for (const d of this.roots) d.reject(down);
    for (const d of this.nodes) d.reject(down);
    for (const d of this.sketches) d.reject(down);
    for (const c of this.blobCalls) c.reply.reject(down);
    this.answers.clear();
    this.roots = [];
    this.nodes = [];
    this.sketches = [];
    this.blobCalls = [];
  }
}

// -- the client ----------------------------------------------------------------------------

/** A live, local replica of one room. Create it with {@link connect} (or `new` + `start()`). */
export class RoomClient {
  readonly room: string;
  readonly url: string;
  readonly actor: string;
  readonly stats: ConnectionStats = {
    attempts: 0,
    welcomes: 0,
    resyncs: 0,
    reconciles: 0,
    tokenRefreshes: 0,
    superseded: 0,
    lastCatchupChanges: 0,
    closes: [],
    waits: [],
  };
  /** Every write the server (or the client, before sending) refused, in order. */
  readonly refused: RefusedChange[] = [];

  private readonly replica: Replica;
  private readonly events = new Emitter<RoomEvents>();
  private readonly opts: RoomOptions;
  private readonly WS: WebSocketConstructor;
  private readonly policy: ReconnectPolicy;
  private readonly random: () => number;
  private readonly requestedCaps: string[] | null;
  private readonly log: Logger | null;
  private token: string | undefined;
  private link: Link | null = null;
  private grantedCaps: string[] = [];
  private welcomeInfo: Welcome | null = null;
  private terminalError: ConnectionClosed | null = null;
  private currentStatus: Status = "connecting";
  private waiters = new Set<() => void>();
  private flushScheduled = false;
  private presenceState: unknown = null;
  private presenceDirty = false;
  private presenceScheduled = false;
  private peers = new Map<string, PresenceInfo>();
  private selfPeer: string | null = null;
  private subscribeFailure: RequestRefused | null = null;
  private closingByApp = false;
  /** Reconcile with mst-probe first; false once a server answered it `unknown-type`. */
  private batched = true;
  private running: Promise<void> | null = null;
  private sleepTimer: { timer: ReturnType<typeof setTimeout>; wake: () => void } | null = null;
  private lastFailure: { code: number; error: ErrorEnvelope | null; cause: string } | null = null;

  constructor(opts: RoomOptions) {
    this.opts = opts;
    this.room = opts.room;
    this.url = wsUrl(opts.url, opts.room);
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) throw new TypeError("no WebSocket: pass the WebSocket option (in Node: the `ws` package's)");
    this.WS = WS;
    this.random = opts.random ?? Math.random;
    this.token = opts.token;
    this.actor = sessionActor(tokenSub(opts.token), opts.actor ?? null, newActor(this.random));
    this.replica = new Replica(this.actor, { subscribe: opts.subscribe ?? ["/"], maxInflight: opts.maxInflight });
    this.policy = new ReconnectPolicy(opts.backoff ?? new Backoff(), opts.reconnect ?? true, opts.tokenProvider !== undefined);
    const binary = opts.binary ?? true;
    const caps = opts.caps ?? null;
    this.requestedCaps = !binary ? caps : caps === null ? ["*", "binary"] : caps.includes("binary") ? caps : [...caps, "binary"];
    this.log = opts.logger === null ? null : (opts.logger ?? console);
    this.events.onListenerError = (e) => this.log?.error("roomsync: a listener failed:", e);
  }

  // -- lifecycle -----------------------------------------------------------------------------

  /**
   * Start the connection loop and wait for the first `welcome`. Rejects with
   * {@link ConnectError} when no session opened within `connectTimeoutMs`, with
   * {@link ConnectionClosed} when the server refuses for good.
   */
  async start(): Promise<void> {
    if (this.running !== null) throw new Error("RoomClient.start() was already called");
    this.running = this.run();
    const timeout = this.opts.connectTimeoutMs === undefined ? DEFAULT_CONNECT_TIMEOUT_MS : this.opts.connectTimeoutMs;
    try {
      await this.waitFor(() => this.stats.welcomes > 0, timeout ?? undefined);
    } catch (error) {
      if (error instanceof TimeoutError) {
        const f = this.lastFailure;
        const stopErr = new ConnectError(
          this.url,
          f?.cause ?? `no welcome within ${timeout} ms`,
          Math.max(1, this.stats.attempts),
          f?.code ?? ABNORMAL_CLOSURE,
          f?.error ?? null,
        );
        this.stop(stopErr);
        await this.close();
        throw stopErr;
      }
      await this.close();
      throw error;
    }
  }

  /** Close the connection (1000) and stop. Unsent writes stay unsent: `flush()` first. */
  async close(): Promise<void> {
    if (this.closingByApp) return;
    this.closingByApp = true;
    const link = this.link;
    if (link !== null) {
      link.closing = true;
      try {
        link.ws.close(1000, "closed by the application");
      } catch {
        // already closed
      }
      link.ended.resolve({ code: 1000 });
    }
    this.sleepTimer?.wake();
    this.stop(new ConnectionClosed(1000, null, "closed by the application"), true);
    await this.running?.catch(() => undefined);
  }

  /** Drop the current connection abruptly, as a network failure would; the client reconnects. */
  disconnect(): void {
    this.link?.abort();
  }

  /** `connecting`, `open` (welcomed, catching up), `synced`, `offline` (waiting to retry) or `closed`. */
  get status(): Status {
    return this.currentStatus;
  }

  /** The last `welcome` (session, peer, caps, head, limits…). */
  get sessionInfo(): Welcome | null {
    return this.welcomeInfo;
  }

  /** Capabilities granted by the last `welcome`. */
  get caps(): string[] {
    return [...this.grantedCaps];
  }

  /** Listen to an event; returns a function that removes the listener. */
  on<K extends keyof RoomEvents>(name: K, callback: (arg: RoomEvents[K]) => void): () => void {
    return this.events.on(name, callback);
  }

  /**
   * Call `callback` for every change at or below `prefix` (segment-wise: `/todos` matches
   * `/todos` and `/todos/1`, not `/todosX`), local or remote. Returns the unsubscribe
   * function. This filters events only; what the client replicates is `subscribe()`.
   */
  watch(prefix: string, callback: (event: ChangeEvent) => void): () => void {
    const p = validatePrefix(prefix);
    return this.events.on("change", (e) => {
      if (prefixMatches(p, e.path)) callback(e);
    });
  }

  // -- state ---------------------------------------------------------------------------------

  /** The canonical hash (SPEC §1) of the local replica's live entries. */
  get root(): string {
    return this.replica.rootHex;
  }

  /** The seq up to which this replica has every change of its subscription. */
  get cursor(): number {
    return this.replica.cursor;
  }

  /** Local writes not yet settled by the server (queued or in flight). */
  get pending(): number {
    return this.replica.pending;
  }

  /** Number of live entries held locally. */
  get size(): number {
    return this.replica.tree.count;
  }

  get(path: string): Uint8Array | undefined {
    return this.replica.get(path)?.value ?? undefined;
  }

  getJSON<T = unknown>(path: string, dflt?: T): T | undefined {
    const v = this.get(path);
    return v === undefined ? dflt : (JSON.parse(decoder.decode(v)) as T);
  }

  getText(path: string): string | undefined {
    const v = this.get(path);
    return v === undefined ? undefined : decoder.decode(v);
  }

  /** `[path, value]` of the live entries at or below `prefix`, sorted by path (UTF-8 order). */
  entries(prefix = "/"): [string, Uint8Array][] {
    return this.replica.items(prefix).map((c) => [c.path, c.value!]);
  }

  /** The full entry at `path` (clock, actor, seq; tombstones included). */
  entry(path: string): Change | undefined {
    return this.replica.entries.get(path);
  }

  // -- writes --------------------------------------------------------------------------------

  set(path: string, value: Uint8Array): Change {
    if (!isBytes(value)) throw new TypeError("value must be a Uint8Array: use setJSON or setText");
    return this.write(path, value);
  }

  /** Write `obj` as compact UTF-8 JSON. */
  setJSON(path: string, obj: unknown): Change {
    const text = JSON.stringify(obj);
    if (text === undefined) throw new TypeError("value is not JSON-serialisable");
    return this.write(path, encoder.encode(text));
  }

  setText(path: string, text: string): Change {
    return this.write(path, encoder.encode(text));
  }

  /** Delete `path` (a tombstone that wins LWW like any write). */
  delete(path: string): Change {
    return this.write(path, null);
  }

  private write(path: string, value: Uint8Array | null): Change {
    this.checkRunning();
    validatePath(path);
    const change = this.replica.write(path, value, Date.now());
    this.emitChange(change, true);
    this.scheduleFlush();
    return change;
  }

  // -- waiting -------------------------------------------------------------------------------

  /**
   * Resolve once every local write so far is settled: acknowledged by the server after
   * its commit (durable), or refused (see the `refused` event). Rejects with
   * {@link TimeoutError} after `timeoutMs`, {@link ConnectionClosed} if the client stops.
   */
  flush(timeoutMs?: number): Promise<void> {
    return this.waitFor(() => this.replica.idle, timeoutMs);
  }

  /** Resolve once the current session finished its catch-up (or resync). */
  waitSynced(timeoutMs?: number): Promise<void> {
    return this.waitFor(() => this.isSynced(), timeoutMs);
  }

  private isSynced(): boolean {
    const l = this.link;
    return l !== null && l.synced && !l.closing;
  }

  private waitFor(predicate: () => boolean, timeoutMs?: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const check = (): void => {
        let ok = false;
        try {
          ok = predicate();
        } catch (error) {
          finish();
          reject(error);
          return;
        }
        if (ok) {
          finish();
          resolve();
        } else if (this.terminalError !== null) {
          finish();
          reject(this.terminalError);
        }
      };
      const finish = (): void => {
        this.waiters.delete(check);
        if (timer !== undefined) clearTimeout(timer);
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          finish();
          reject(new TimeoutError(`timed out after ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.waiters.add(check);
      check();
    });
  }

  private pulse(): void {
    for (const check of [...this.waiters]) check();
  }

  private checkRunning(): void {
    if (this.terminalError !== null) throw this.terminalError;
  }

  // -- subscriptions and reconcile -------------------------------------------------------------

  /** Replace the subscription prefixes; resolves once the server sent what they add. */
  async subscribe(paths: string[]): Promise<void> {
    this.replica.setPrefixes(paths);
    const target = this.replica.prefixes;
    const failure = this.subscribeFailure;
    const link = this.link;
    if (link !== null && link.synced && !link.closing) this.maybeSubscribe(link);
    await this.waitFor(() => {
      if (this.subscribeFailure !== failure && this.subscribeFailure !== null) throw this.subscribeFailure;
      const r = this.replica;
      return sameList(r.syncedPrefixes, target) || !sameList(r.prefixes, target);
    });
  }

  /** The server's canonical hash of the room (`mst-root`; needs cap `reconcile`). */
  async serverRoot(): Promise<string> {
    for (;;) {
      const link = await this.syncedLink();
      try {
        const msg = await this.mstRoot(link);
        if (typeof msg.root !== "string") throw new RequestRefused({ code: "internal", message: "mst-root without root" });
        return msg.root;
      } catch (error) {
        if (!(error instanceof LinkDown)) throw error;
      }
    }
  }

  /** Compare the local MST with the server's and fetch what differs (SPEC §1). */
  async reconcile(): Promise<ReconcileResult> {
    for (;;) {
      const link = await this.syncedLink();
      try {
        return await this.reconcileOn(link);
      } catch (error) {
        if (!(error instanceof LinkDown)) throw error;
      }
    }
  }

  private async syncedLink(): Promise<Link> {
    await this.waitFor(() => this.isSynced());
    return this.link!;
  }

  private async welcomedLink(): Promise<Link> {
    await this.waitFor(() => this.link !== null && this.link.welcome !== null && !this.link.closing);
    return this.link!;
  }

  /**
   * One reconcile: from a fresh `mst-root`, the batched walk (`mst-probe`, entries inline,
   * the rest by `request{paths}`), then, when the roots still differ or the server does
   * not know `mst-probe`, the exact walk (`mst-get`), as the Python SDK's Reconciler.
   */
  private async reconcileOn(link: Link): Promise<ReconcileResult> {
    this.stats.reconciles++;
    let result: ReconcileResult | null = null;
    let batched = this.batched;
    for (let pass = 0; pass < MAX_RECONCILE_PASSES; pass++) {
      const msg = await this.mstRoot(link);
      if (typeof msg.root !== "string") throw new CodecError("bad postcard: mst-root without root");
      const remote = msg.root === EMPTY_ROOT_HEX ? null : fromHex(msg.root);
      if (batched) {
        const got = await this.batchedPass(link, remote);
        if (got !== null) {
          result = got;
          const mine = this.replica.tree.rootHash;
          if (got.complete && (mine === null ? got.remoteRoot === null : got.remoteRoot !== null && toHex(mine) === toHex(got.remoteRoot))) break;
          this.log?.info?.("roomsync: batched reconcile left a difference: an exact pass follows");
        }
        batched = false;
        continue;
      }
      const flow = reconcileFlow(this.replica.tree, remote);
      let step = flow.next();
      while (!step.done) {
        const answer = await this.mstGet(link, step.value.hashes.map(toHex));
        const nodes = new Map<string, Uint8Array>();
        for (const n of (answer.nodes as { hash: string; data: string }[]) ?? []) {
          nodes.set(n.hash.toLowerCase(), b64decode(n.data, "mst node"));
        }
        step = flow.next(nodes);
      }
      result = step.value;
      const paths = differing(result);
      if (paths.length) await this.requestPaths(link, paths);
      if (result.complete) break;
    }
    return result!;
  }

  private async batchedPass(link: Link, remote: Uint8Array | null): Promise<BatchedResult | null> {
    const flow = reconcileBatched(this.replica.tree, remote);
    let step = flow.next();
    while (!step.done) {
      const outcomes = await Promise.allSettled(step.value.requests.map((data) => this.mstProbe(link, data)));
      const refused: RequestRefused[] = [];
      const answers: Uint8Array[] = [];
      for (const o of outcomes) {
        if (o.status === "fulfilled") answers.push(b64decode(o.value.data, "mst-sketch data"));
        else if (o.reason instanceof RequestRefused) refused.push(o.reason);
        else throw o.reason; // LinkDown or a bug
      }
      if (refused.length) {
        if (refused[0]!.code === "unknown-type") this.batched = false; // an older server
        this.log?.info?.(`roomsync: mst-probe refused (${refused[0]!.code}): an exact pass follows`);
        flow.return(undefined as never);
        return null;
      }
      step = flow.next(answers);
    }
    const result = step.value;
    for (const change of this.replica.imposeEntries(result.entries)) this.emitChange(change, false);
    const paths = toRequest(result);
    if (paths.length) await this.requestPaths(link, paths);
    return result;
  }

  private mstProbe(link: Link, data: Uint8Array): Promise<Record<string, unknown>> {
    const d = deferred<Record<string, unknown>>();
    link.send({ type: "mst-probe", data: b64encode(data) });
    link.sketches.push(d);
    return d.promise;
  }

  private mstRoot(link: Link): Promise<Record<string, unknown>> {
    const d = deferred<Record<string, unknown>>();
    link.send({ type: "mst-root" });
    link.roots.push(d);
    return d.promise;
  }

  private mstGet(link: Link, hashes: string[]): Promise<Record<string, unknown>> {
    const d = deferred<Record<string, unknown>>();
    link.send({ type: "mst-get", hashes });
    link.nodes.push(d);
    return d.promise;
  }

  private async requestPaths(link: Link, paths: string[]): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const chunk of pathChunks(paths)) {
      link.send({ type: "request", paths: chunk });
      const answer = this.replica.expectPaths(chunk);
      const d = deferred<void>();
      link.answers.set(answer, d);
      waits.push(d.promise);
    }
    await Promise.all(waits);
  }

  private fetchWinners(link: Link): void {
    if (link.closing || !link.synced) return;
    for (const chunk of pathChunks(this.replica.fetchPaths())) {
      link.send({ type: "request", paths: chunk });
      link.answers.set(this.replica.expectPaths(chunk), deferred<void>());
    }
  }

  private maybeSubscribe(link: Link): void {
    if (link.closing) return;
    const answer = this.replica.expectSubscribe();
    if (answer === null) return;
    link.answers.set(answer, deferred<void>());
    link.send({ type: "subscribe", paths: [...answer.scopeIn] });
  }

  // -- presence (SPEC §5) ------------------------------------------------------------------------

  /** The other peers' presence, `peer -> {peer, actor, state}` (a copy). */
  get presence(): Map<string, PresenceInfo> {
    return new Map(this.peers);
  }

  get localPresence(): unknown {
    return this.presenceState;
  }

  /**
   * Publish `state` (JSON) as this client's presence: sent after this turn, re-sent after
   * every reconnect and kept alive by the heartbeat until `clearPresence()`.
   */
  setPresence(state: unknown): void {
    this.checkRunning();
    if (state === null || state === undefined) {
      this.clearPresence();
      return;
    }
    const text = JSON.stringify(state);
    if (text === undefined) throw new TypeError("presence state is not JSON-serialisable");
    const info = this.welcomeInfo;
    if (info !== null) {
      const limit = parseLimits(info.limits).presenceMaxBytes;
      const size = encoder.encode(text).length;
      if (limit && size > limit) throw new RangeError(`presence state of ${size} bytes exceeds presence_max_bytes ${limit}`);
      if (!this.grantedCaps.includes("presence")) {
        throw new RequestRefused({ code: "forbidden", message: "this session has no 'presence' capability" });
      }
    }
    this.presenceState = JSON.parse(text);
    this.markPresence();
  }

  /** Stop publishing a presence state (sends `presence{state: null}`): the others see us leave. */
  clearPresence(): void {
    this.presenceState = null;
    this.markPresence();
  }

  private markPresence(): void {
    this.presenceDirty = true;
    if (!this.presenceScheduled) {
      this.presenceScheduled = true;
      queueMicrotask(() => {
        this.presenceScheduled = false;
        if (this.link !== null && this.presenceDirty) this.sendPresence(this.link);
      });
    }
  }

  private sendPresence(link: Link): void {
    if (link.welcome === null || link.closing) return;
    this.presenceDirty = false;
    const state = this.presenceState;
    if (state === null && !link.presenceSent) return;
    if (!link.welcome.caps.includes("presence")) {
      this.log?.warn("roomsync: presence not sent: this session has no 'presence' capability");
      return;
    }
    link.send({ type: "presence", state });
    link.presenceSent = state !== null;
    this.armHeartbeat(link);
  }

  private presenceReset(selfPeer: string, snapshot: unknown[]): void {
    this.selfPeer = selfPeer;
    const fresh = new Map<string, PresenceInfo>();
    for (const item of snapshot) {
      const info = presenceInfo(item);
      if (info !== null && info.peer !== selfPeer && info.state !== null) fresh.set(info.peer, info);
    }
    const left = [...this.peers.keys()].filter((p) => !fresh.has(p));
    const changed = [...fresh.values()].filter((i) => !samePresence(this.peers.get(i.peer), i));
    this.peers = fresh;
    this.emitPresence(changed, left);
  }

  private presenceUpdate(items: unknown[]): void {
    const changed = new Map<string, PresenceInfo>();
    const left: string[] = [];
    for (const item of items) {
      const info = presenceInfo(item);
      if (info === null || info.peer === this.selfPeer) continue;
      if (info.state === null) {
        changed.delete(info.peer);
        if (this.peers.delete(info.peer)) left.push(info.peer);
      } else if (!samePresence(this.peers.get(info.peer), info)) {
        this.peers.set(info.peer, info);
        changed.set(info.peer, info);
      }
    }
    this.emitPresence([...changed.values()], left);
  }

  private emitPresence(changed: PresenceInfo[], left: string[]): void {
    if (changed.length || left.length) this.events.emit("presence", { changed, left });
  }

  // -- blobs (SPEC §4) ---------------------------------------------------------------------------

  /**
   * Store `data` as a blob of the room; resolves with its hash (`sha256:<hex>`) once the
   * server verified and stored it. Uses a direct upload when `blob-direct` is granted,
   * falling back to an inline `blob-upload` when it is denied or the PUT fails.
   */
  async putBlob(data: Uint8Array, timeoutMs?: number): Promise<string> {
    if (!isBytes(data)) throw new TypeError("data must be a Uint8Array");
    const hash = blobHash(data);
    return withTimeout(this.retryOnLinkDown((link) => this.uploadFlow(link, hash, data)), timeoutMs);
  }

  /** Fetch blob `hash`; the bytes are returned only when their size and SHA-256 match. */
  async getBlob(hash: string, timeoutMs?: number): Promise<Uint8Array> {
    if (!/^sha256:[0-9a-f]{64}$/.test(hash)) throw new RangeError(`invalid blob hash ${JSON.stringify(hash)}: expected sha256:<64 lowercase hex>`);
    return withTimeout(this.retryOnLinkDown((link) => this.fetchFlow(link, hash)), timeoutMs);
  }

  private async retryOnLinkDown<T>(flow: (link: Link) => Promise<T>): Promise<T> {
    for (;;) {
      const link = await this.welcomedLink();
      try {
        return await flow(link);
      } catch (error) {
        if (!(error instanceof LinkDown)) throw error;
      }
    }
  }

  private blobFrame(link: Link, message: Record<string, unknown>): Promise<Record<string, unknown>> {
    const reply = deferred<Record<string, unknown>>();
    link.send(message);
    link.blobCalls.push({ sent: message.type as string, hash: message.hash as string, reply });
    return reply.promise;
  }

  private async uploadFlow(link: Link, hash: string, data: Uint8Array): Promise<string> {
    const caps = link.welcome!.caps;
    const limits = link.limits;
    if (!caps.includes("blob")) throw new BlobRejected(hash, "forbidden: this session has no 'blob' capability");
    let whyInline = "cap blob-direct was not negotiated";
    if (caps.includes("blob-direct")) {
      const grant = await this.blobFrame(link, { type: "request-upload", hash, size: data.length });
      if (grant.type === "upload-url") {
        const failure = await this.httpPut(grant, data);
        if (failure === null) {
          return uploaded(hash, await this.blobFrame(link, { type: "blob-uploaded", hash }));
        }
        whyInline = `the direct upload failed (${failure})`;
        this.log?.warn(`roomsync: blob ${hash}: ${whyInline}; uploading inline`);
      } else if (grant.type === "upload-denied") {
        const reason = String(grant.reason ?? "");
        if (reason.startsWith("too-large")) throw new BlobRejected(hash, reason);
        whyInline = `upload-denied: ${reason}`;
      } else if (grant.type === "error") {
        throw new BlobRejected(hash, `${grant.code}: ${grant.message}`);
      } else {
        throw new BlobRejected(hash, `unexpected answer '${grant.type}' to request-upload`);
      }
    }
    if (limits.blobMaxBytes && data.length > limits.blobMaxBytes) {
      throw new BlobRejected(hash, `too-large: ${data.length} > blob_max_bytes ${limits.blobMaxBytes}`);
    }
    if (4 * Math.floor((data.length + 2) / 3) + INLINE_OVERHEAD > limits.maxFrameBytes) {
      throw new BlobRejected(
        hash,
        `too-large for an inline upload: ${data.length} bytes do not fit a ${limits.maxFrameBytes}-byte frame, and ${whyInline}`,
      );
    }
    return uploaded(hash, await this.blobFrame(link, { type: "blob-upload", hash, size: data.length, data: b64encode(data) }));
  }

  private async httpPut(grant: Record<string, unknown>, data: Uint8Array): Promise<string | null> {
    const f = this.opts.fetch ?? globalThis.fetch;
    if (typeof f !== "function") return "network: no fetch available";
    try {
      const url = new URL(String(grant.url), this.httpBase()).toString();
      const resp = await f(url, {
        method: typeof grant.method === "string" ? grant.method : "PUT",
        headers: (grant.headers as Record<string, string>) ?? {},
        body: data as unknown as BodyInit,
      });
      if (resp.status >= 200 && resp.status < 300) return null;
      return `http-${resp.status}: ${(await resp.text()).slice(0, 200)}`;
    } catch (error) {
      return `network: ${(error as Error).message}`;
    }
  }

  private httpBase(): string {
    return this.url.replace(/^ws/, "http");
  }

  private async fetchFlow(link: Link, hash: string): Promise<Uint8Array> {
    if (!link.welcome!.caps.includes("blob")) throw new BlobFetchFailed(hash, "forbidden: this session has no 'blob' capability");
    const answer = await this.blobFrame(link, { type: "blob-request", hash });
    if (answer.type === "error") {
      const reason = `${answer.code}: ${answer.message}`;
      throw answer.code === "not-found" ? new BlobNotFound(hash, reason) : new BlobFetchFailed(hash, reason);
    }
    if (answer.type !== "blob") throw new BlobFetchFailed(hash, `unexpected answer '${answer.type}' to blob-request`);
    const size = typeof answer.size === "number" ? answer.size : null;
    let data: Uint8Array;
    if (typeof answer.data === "string") {
      try {
        data = b64decode(answer.data, "blob");
      } catch {
        throw new BlobFetchFailed(hash, "bad-base64: the inline data is not base64");
      }
    } else if (typeof answer.url === "string") {
      const f = this.opts.fetch ?? globalThis.fetch;
      let resp: Response;
      try {
        resp = await f(new URL(answer.url, this.httpBase()).toString());
      } catch (error) {
        throw new BlobFetchFailed(hash, `network: ${(error as Error).message}`);
      }
      if (resp.status !== 200) throw new BlobFetchFailed(hash, `http-${resp.status}: ${(await resp.text()).slice(0, 200)}`);
      data = new Uint8Array(await resp.arrayBuffer());
    } else {
      throw new BlobFetchFailed(hash, "the blob answer has neither data nor url");
    }
    if (size !== null && data.length !== size) throw new BlobFetchFailed(hash, `size-mismatch: got ${data.length} bytes, announced ${size}`);
    if (blobHash(data) !== hash) throw new BlobFetchFailed(hash, "hash-mismatch: the bytes received have another sha256");
    return data;
  }

  // -- the connection loop ---------------------------------------------------------------------

  private setStatus(status: Status): void {
    if (this.currentStatus === status) return;
    this.currentStatus = status;
    this.events.emit("status", status);
  }

  private stop(error: ConnectionClosed, byApp = false): void {
    if (this.terminalError !== null) return;
    this.terminalError = error;
    this.setStatus("closed");
    if (!byApp) this.events.emit("error", error);
    this.events.emit("close", error);
    this.pulse();
  }

  private async run(): Promise<void> {
    try {
      while (this.terminalError === null) {
        this.setStatus("connecting");
        const ended = await this.attempt();
        if (this.terminalError !== null) return;
        const errorCode = typeof ended.error?.code === "string" ? ended.error.code : null;
        this.stats.closes.push([ended.code, errorCode]);
        const retryAfter = ended.error?.retry_after_ms;
        const decision = this.policy.afterClose(ended.code, {
          welcomed: ended.welcomed,
          random: this.random,
          errorCode,
          retryAfterMs: typeof retryAfter === "number" ? retryAfter : null,
        });
        if (decision.stop !== null) {
          this.stop(this.stopError(decision.stop, ended));
          return;
        }
        if (decision.action === "resync") this.replica.resyncRequired();
        this.setStatus("offline");
        const delayMs = decision.delay * 1000;
        this.stats.waits.push({ delayMs, closeCode: ended.code, errorCode, retryAfterMs: decision.retryAfterMs });
        const verb = this.stats.welcomes === 0 ? "cannot connect to" : "connection ended to";
        this.log?.info?.(`roomsync: ${verb} ${this.url}: ${ended.cause}; retry ${decision.attempt} in ${Math.round(delayMs)} ms`);
        if (delayMs > 0) await this.sleep(delayMs);
      }
    } catch (error) {
      this.log?.error("roomsync: client loop failed", error);
      this.stop(new ConnectionClosed(ABNORMAL_CLOSURE, null, `client failure: ${String(error)}`));
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepTimer = null;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepTimer = { timer, wake };
    });
  }

  private stopError(reason: StopReason, ended: { code: number; error: ErrorEnvelope | null; cause: string }): ConnectionClosed {
    if (reason === "no-token-provider") {
      return new ConnectionClosed(ended.code, ended.error, "token expired and no tokenProvider to refresh it: pass tokenProvider");
    }
    if (reason === "reconnect-off" && this.stats.welcomes === 0) {
      return new ConnectError(this.url, ended.cause, this.stats.attempts, ended.code, ended.error);
    }
    return new ConnectionClosed(ended.code, ended.error);
  }

  private async nextToken(): Promise<string | undefined> {
    const provider = this.opts.tokenProvider;
    if (provider !== undefined && (this.stats.attempts > 1 || this.token === undefined)) {
      this.token = await provider();
      this.stats.tokenRefreshes++;
    }
    return this.token;
  }

  private async attempt(): Promise<{ code: number; error: ErrorEnvelope | null; welcomed: boolean; cause: string }> {
    this.stats.attempts++;
    let token: string | undefined;
    try {
      token = await this.nextToken();
    } catch (error) {
      this.log?.warn("roomsync: tokenProvider failed:", error);
      const failure = { code: ABNORMAL_CLOSURE, error: { code: "auth", message: `auth: tokenProvider failed: ${String(error)}` }, welcomed: false, cause: `tokenProvider failed: ${String(error)}` };
      this.lastFailure = failure;
      return failure;
    }
    if (this.terminalError !== null) return { code: 1000, error: null, welcomed: false, cause: "stopped" };
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.url);
    } catch (error) {
      const failure = { code: ABNORMAL_CLOSURE, error: null, welcomed: false, cause: String(error) };
      this.lastFailure = failure;
      return failure;
    }
    ws.binaryType = "arraybuffer";
    if (this.replica.needsResync) this.stats.resyncs++;
    const plan = this.replica.startSession(this.grantedCaps.includes("reconcile"));
    const link = new Link(ws, plan.mode);
    this.link = link;
    let opened = false;
    const openTimer = setTimeout(() => {
      if (!opened) link.abort();
    }, HANDSHAKE_TIMEOUT_MS);
    ws.onopen = () => {
      opened = true;
      clearTimeout(openTimer);
      link.lastRecvMs = link.lastSentMs = performance.now();
      const hello: Record<string, unknown> = {
        type: "hello",
        v: PROTOCOL_VERSION,
        actor: this.actor,
        subscribe: plan.subscribe,
      };
      if (token !== undefined) hello.token = token;
      if (this.requestedCaps !== null) hello.caps = this.requestedCaps;
      if (plan.cursor !== null) hello.cursor = plan.cursor;
      if (!plan.catchup) hello.catchup = false;
      try {
        link.send(hello);
      } catch {
        link.abort();
      }
    };
    ws.onmessage = (ev) => {
      if (link.closing) return;
      link.lastRecvMs = performance.now();
      try {
        if (typeof ev.data === "string") this.onText(link, ev.data);
        else this.onBinary(link, toBytes(ev.data));
      } catch (error) {
        this.log?.error("roomsync: failed to handle a server frame:", error);
        link.abort();
      }
      this.pulse();
    };
    ws.onerror = () => undefined; // the close event that follows says how it ended
    ws.onclose = (ev) => {
      link.ended.resolve({ code: typeof ev.code === "number" && ev.code !== 1005 ? ev.code : ABNORMAL_CLOSURE });
    };
    const { code } = await link.ended.promise;
    clearTimeout(openTimer);
    this.endLink(link);
    const welcomed = link.welcome !== null;
    const error = link.lastError;
    const cause =
      code === ABNORMAL_CLOSURE && error === null
        ? welcomed
          ? "the connection dropped"
          : opened
            ? "the connection dropped before welcome"
            : "connection refused or unreachable"
        : `${welcomed ? "closed with code" : "closed before welcome with code"} ${code}${error ? ` (${error.code}: ${error.message})` : ""}`;
    const ended = { code, error, welcomed, cause };
    if (!welcomed) this.lastFailure = ended;
    return ended;
  }

  private endLink(link: Link): void {
    link.closing = true;
    if (link.heartbeat !== null) clearTimeout(link.heartbeat);
    ws_detach(link.ws);
    try {
      link.ws.close();
    } catch {
      // already closed
    }
    link.failWaiters();
    if (this.link === link) this.link = null;
    this.replica.requeueInflight();
    const left = [...this.peers.keys()];
    this.peers = new Map();
    this.selfPeer = null;
    this.emitPresence([], left);
    this.pulse();
  }

  // -- heartbeat (core.keepalive) --------------------------------------------------------------

  private armHeartbeat(link: Link): void {
    if (link.heartbeat !== null) clearTimeout(link.heartbeat);
    if (link.closing || link.welcome === null) return;
    const heartbeat = Math.max(link.welcome.heartbeat_ms || 0, MIN_HEARTBEAT_MS);
    const ttl = link.limits.presenceTtlMs;
    const idle = !link.presenceSent || !ttl ? heartbeat : Math.max(MIN_KEEPALIVE_MS, Math.min(heartbeat, ttl / 3));
    const silence = SILENT_HEARTBEATS * heartbeat;
    const now = performance.now();
    const deadline = Math.max(Math.min(link.lastSentMs + idle, link.lastRecvMs + silence), now + MIN_KEEPALIVE_MS);
    link.heartbeat = setTimeout(() => {
      link.heartbeat = null;
      if (link.closing) return;
      const t = performance.now();
      if (t - link.lastRecvMs > silence) {
        this.log?.info?.(`roomsync: no frame from ${this.url} for ${Math.round(t - link.lastRecvMs)} ms: reconnecting`);
        link.abort();
        return;
      }
      if (t - link.lastSentMs >= idle) {
        try {
          link.send({ type: "ping" });
        } catch {
          return;
        }
      }
      this.armHeartbeat(link);
    }, deadline - now);
    const timer = link.heartbeat as { unref?: () => void };
    timer.unref?.();
  }

  // -- incoming frames -------------------------------------------------------------------------

  private onBinary(link: Link, payload: Uint8Array): void {
    if (!link.binary) {
      this.log?.error("roomsync: server sent a binary frame without the 'binary' cap: reconnecting");
      link.abort();
      return;
    }
    let frame;
    try {
      frame = parseServerFrame(payload);
    } catch (error) {
      this.log?.error(`roomsync: server sent a broken binary frame (${(error as Error).message}): reconnecting`);
      link.abort();
      return;
    }
    this.onPack(link, frame.pack, Number(frame.head), frame.done);
  }

  private onText(link: Link, text: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text);
    } catch {
      this.log?.warn("roomsync: ignoring a server frame that is not JSON");
      return;
    }
    if (msg === null || typeof msg !== "object" || typeof msg.type !== "string") {
      this.log?.warn("roomsync: ignoring a server frame without a type");
      return;
    }
    switch (msg.type) {
      case "welcome":
        this.onWelcome(link, msg as unknown as Welcome);
        return;
      case "error":
        this.onError(link, msg as unknown as ErrorEnvelope);
        return;
      case "ping":
        if (!link.closing) link.send({ type: "pong" });
        return;
      case "pong":
        return;
      case "pack": {
        let data: Uint8Array;
        try {
          data = b64decode(msg.data, "data");
        } catch (error) {
          this.log?.error(`roomsync: server sent an undecodable pack (${(error as Error).message}): reconnecting`);
          link.abort();
          return;
        }
        const head = typeof msg.head === "number" ? msg.head : null;
        this.onPack(link, data, head, msg.done === true);
        return;
      }
      case "ack":
        this.onAck(link, msg);
        return;
      case "mst-root":
        link.roots.shift()?.resolve(msg);
        return;
      case "mst-nodes":
        link.nodes.shift()?.resolve(msg);
        return;
      case "mst-sketch":
        link.sketches.shift()?.resolve(msg);
        return;
      case "presence":
        if (Array.isArray(msg.peers)) this.presenceUpdate(msg.peers);
        return;
      case "presence-leave":
        if (typeof msg.peer === "string" && this.peers.delete(msg.peer)) this.emitPresence([], [msg.peer]);
        return;
      case "blob-available":
        this.events.emit("blob-available", { hash: String(msg.hash), size: Number(msg.size) });
        return;
      case "tick":
        this.events.emit("tick", { n: Number(msg.n), at: Number(msg.at) });
        return;
      case "upload-url":
      case "upload-denied":
      case "blob-uploaded":
      case "upload-rejected":
      case "blob":
        this.onBlobReply(link, msg);
        return;
      default:
        this.log?.debug?.(`roomsync: no handler for server message ${msg.type}`);
    }
  }

  private onWelcome(link: Link, msg: Welcome): void {
    link.welcome = msg;
    if (msg.actor && msg.actor !== this.actor && !actorAllowed(msg.actor, this.actor)) {
      this.log?.warn(`roomsync: the server binds this session to actor ${msg.actor} but this replica writes as ${this.actor}: its packs will be refused`);
    }
    this.welcomeInfo = msg;
    this.grantedCaps = Array.isArray(msg.caps) ? msg.caps.filter((c) => typeof c === "string") : [];
    link.binary = this.grantedCaps.includes("binary");
    link.limits = parseLimits(msg.limits);
    link.packMaxBytes = Math.max(1, Math.min(link.limits.maxPackBytes, Math.floor(((link.limits.maxFrameBytes - FRAME_OVERHEAD) * 3) / 4)));
    this.stats.welcomes++;
    this.armHeartbeat(link);
    this.setStatus("open");
    // State first (as the Python SDK): catch-up, resync or start sending.
    const canRead = this.grantedCaps.includes("read");
    this.replica.onWelcome(typeof msg.head === "number" ? msg.head : 0, canRead);
    if (link.mode === "reconcile" && canRead) {
      if (!this.grantedCaps.includes("reconcile")) {
        link.abort();
        return;
      }
      void this.resync(link);
    } else if (this.replica.synced) {
      this.markSynced(link);
    }
    this.scheduleFlush();
    // Presence next: the welcome's snapshot, then our own state restored (SPEC §5).
    this.presenceReset(String(msg.peer), Array.isArray(msg.presence) ? msg.presence : []);
    if (this.presenceState !== null) this.sendPresence(link);
  }

  private async resync(link: Link): Promise<void> {
    try {
      await this.reconcileOn(link);
    } catch (error) {
      if (error instanceof LinkDown) return;
      this.log?.warn("roomsync: MST resync failed, falling back to a full catch-up:", error);
      this.grantedCaps = this.grantedCaps.filter((c) => c !== "reconcile");
      link.abort();
      return;
    }
    if (link.closing) return;
    this.replica.finishResync();
    this.markSynced(link);
    this.pulse();
  }

  private markSynced(link: Link): void {
    link.synced = true;
    this.stats.lastCatchupChanges = link.catchupChanges;
    this.maybeSubscribe(link);
    this.fetchWinners(link);
    this.scheduleFlush();
    this.setStatus("synced");
    this.pulse();
  }

  private onPack(link: Link, data: Uint8Array, head: number | null, done: boolean): void {
    let changes: Change[];
    try {
      changes = decodePack(data);
    } catch (error) {
      this.log?.error(`roomsync: server sent an undecodable pack (${(error as Error).message}): reconnecting`);
      link.abort();
      return;
    }
    if (!link.synced) link.catchupChanges += changes.length;
    const received = this.replica.receive(changes, head, done);
    if (this.events.has("change")) for (const c of received.changed) this.emitChange(c, false);
    const finished = received.finished;
    if (finished === null) return;
    const d = link.answers.get(finished);
    link.answers.delete(finished);
    d?.resolve();
    if (finished.kind === "catchup" || finished.kind === "full") this.markSynced(link);
    else if (finished.kind === "subscribe") this.maybeSubscribe(link);
  }

  private onAck(link: Link, msg: Record<string, unknown>): void {
    const seqs = Array.isArray(msg.seqs) ? (msg.seqs as (number | null)[]) : [];
    const refused = Array.isArray(msg.refused) ? (msg.refused as { index: number; code?: string; message?: string }[]) : [];
    const superseded = Array.isArray(msg.superseded) ? (msg.superseded as { index: number }[]) : [];
    const settled = this.replica.onAck(seqs, refused, superseded);
    this.settled(settled);
    if (settled.superseded.length) this.fetchWinners(link);
    if (settled.retry) {
      const pause = Math.min(RATE_LIMIT_PAUSE_MS[1], RATE_LIMIT_PAUSE_MS[0] * 2 ** Math.min(link.rateLimited, 16));
      link.rateLimited++;
      link.pauseUntil = performance.now() + pause;
      setTimeout(() => this.scheduleFlush(), pause);
      return;
    }
    link.rateLimited = 0;
    this.flushOutgoing();
  }

  private onError(link: Link, msg: ErrorEnvelope): void {
    link.lastError = msg;
    const ref = msg.ref;
    this.log?.info?.(`roomsync: server error ${msg.code} (ref ${ref}): ${msg.message}`);
    const refused = new RequestRefused(msg);
    if (ref !== "pack") this.events.emit("error", refused);
    switch (ref) {
      case "request":
        this.failAnswer(link, "paths", refused);
        return;
      case "subscribe":
        this.subscribeFailure = refused;
        this.failAnswer(link, "subscribe", refused);
        return;
      case "mst-root":
        link.roots.shift()?.reject(refused);
        return;
      case "mst-get":
        link.nodes.shift()?.reject(refused);
        return;
      case "mst-probe":
        link.sketches.shift()?.reject(refused);
        return;
      case "request-upload":
      case "blob-upload":
      case "blob-uploaded":
      case "blob-request": {
        const i = link.blobCalls.findIndex((c) => c.sent === ref);
        if (i >= 0) {
          const [call] = link.blobCalls.splice(i, 1);
          call!.reply.resolve(msg as unknown as Record<string, unknown>);
        }
        return;
      }
      default:
        return;
    }
  }

  private failAnswer(link: Link, kind: "paths" | "subscribe", error: RequestRefused): void {
    const answer = this.replica.answerFailed(kind);
    if (answer !== null) {
      const d = link.answers.get(answer);
      link.answers.delete(answer);
      d?.reject(error);
    }
  }

  private onBlobReply(link: Link, msg: Record<string, unknown>): void {
    const replies: Record<string, string[]> = {
      "request-upload": ["upload-url", "upload-denied"],
      "blob-upload": ["blob-uploaded", "upload-rejected"],
      "blob-uploaded": ["blob-uploaded", "upload-rejected"],
      "blob-request": ["blob"],
    };
    const i = link.blobCalls.findIndex((c) => replies[c.sent]!.includes(msg.type as string) && c.hash === msg.hash);
    if (i < 0) return;
    const [call] = link.blobCalls.splice(i, 1);
    call!.reply.resolve(msg);
  }

  // -- outgoing packs --------------------------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.flushOutgoing();
    });
  }

  private flushOutgoing(): void {
    const link = this.link;
    if (link === null || link.welcome === null || link.closing) return;
    if (performance.now() < link.pauseUntil) return;
    if (!link.welcome.caps.includes("write")) {
      this.settled(this.replica.refuseUnsent("forbidden", "this session has no 'write' capability"));
      this.pulse();
      return;
    }
    const oversize = this.replica.refuseOversize(link.packMaxBytes);
    if (oversize.refused.length) {
      this.settled(oversize);
      this.pulse();
    }
    for (;;) {
      const pack = this.replica.takeOutgoing(link.limits.maxChangesPerPack, link.packMaxBytes);
      if (pack === null) return;
      if (link.binary) link.sendBinary(clientFrame(pack));
      else link.send({ type: "pack", data: b64encode(encodePack(pack, { seqs: false })) });
    }
  }

  private settled(s: Settled): void {
    for (const r of s.refused) {
      this.log?.warn(`roomsync: write refused: ${r.change.path} ${r.code}: ${r.message}`);
      this.refused.push(r);
      this.events.emit("refused", r);
    }
    for (const lost of s.superseded) {
      this.stats.superseded++;
      this.events.emit("superseded", lost);
    }
    for (const c of s.reverted) this.emitChange(c, false);
  }

  private emitChange(change: Change, local: boolean): void {
    this.events.emit("change", { path: change.path, value: change.value, local, change });
  }
}

/** `await room.flush(ms)` and the other waits reject with this after their timeout. */
export class TimeoutError extends Error {
  code = "timeout";
}

/** Create a {@link RoomClient} and wait for its first welcome. */
export async function connect(opts: RoomOptions): Promise<RoomClient> {
  const client = new RoomClient(opts);
  await client.start();
  return client;
}

function uploaded(hash: string, answer: Record<string, unknown>): string {
  if (answer.type === "blob-uploaded") return hash;
  if (answer.type === "upload-rejected") throw new BlobRejected(hash, String(answer.reason ?? ""));
  if (answer.type === "error") throw new BlobRejected(hash, `${answer.code}: ${answer.message}`);
  throw new BlobRejected(hash, `unexpected answer '${answer.type}' to the upload`);
}

function withTimeout<T>(promise: Promise<T>, ms: number | undefined): Promise<T> {
  if (ms === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(`timed out after ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

function toBytes(data: unknown): Uint8Array {
  if (isArrayBuffer(data)) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // ws may hand fragmented messages as a list of Buffers
    const parts = data.map(toBytes);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
  throw new TypeError("unexpected binary frame type");
}

function ws_detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = () => undefined;
}

function presenceInfo(item: unknown): PresenceInfo | null {
  if (item === null || typeof item !== "object") return null;
  const o = item as Record<string, unknown>;
  if (typeof o.peer !== "string") return null;
  return { peer: o.peer, actor: typeof o.actor === "string" ? o.actor : "", state: o.state ?? null };
}

function samePresence(a: PresenceInfo | undefined, b: PresenceInfo): boolean {
  return a !== undefined && a.actor === b.actor && JSON.stringify(a.state) === JSON.stringify(b.state);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
