/**
 * The client's local copy of a room, sans I/O: a port of `roomsync.core.replica.Replica`.
 * The connection shell ({@link RoomClient}) feeds it decoded server messages and asks it
 * what to send; every protocol decision is made here.
 *
 * - `entries`: `path -> Change`, the LWW state (tombstones included) and its MST, so
 *   `rootHex` is the canonical hash of SPEC §1;
 * - a hybrid logical clock that stamps local writes and observes remote ones;
 * - the offline queue (at most one unsent write per path; a newer write of a path
 *   replaces the older unsent one and moves to the back) and the FIFO of packs in flight;
 * - `cursor`: the seq up to which the replica has every change of its subscription.
 *
 * Cursor rule: the cursor moves to a catch-up chunk's `head`, a broadcast's highest seq
 * and acked seqs; never for a `request{paths}`/`subscribe` answer. During an MST resync
 * it stays put until {@link Replica.finishResync}.
 *
 * Authority: after an authoritative answer (a full catch-up, a subscribe answer for the
 * prefixes it adds, a reconcile's `request{paths}` answer) every confirmed local entry in
 * its scope is replaced by what the server sent, or dropped when it sent nothing; only
 * unacknowledged local writes are pushed. Refused writes roll back to the last
 * server-confirmed entry of their path; superseded writes (acked, but lost LWW) too, and
 * the winner is fetched when the replica lacks it.
 */

import { sameKey, wins, HybridClock } from "./merge.js";
import { MerkleSearchTree } from "./mst.js";
import { encodedSize, type Change, type U64 } from "./postcard.js";
import { anyPrefixMatches, prefixMatches, validatePath, validatePrefix } from "./paths.js";
import { compareUtf8, isBytes, sortUtf8 } from "./bytes.js";


export const DEFAULT_MAX_INFLIGHT = 4;
/** Bytes of a Pack besides its changes (the varint count). */
export const PACK_OVERHEAD = 10;
export const MAX_ACTOR_BYTES = 256;

export type SyncMode = "resume" | "full" | "reconcile";
export type AnswerKind = "catchup" | "full" | "paths" | "subscribe";

/** A chunked `pack` answer the replica expects (it ends with a `done` chunk). */
export class Answer {
  seen = new Map<string, Change>();
  /**
   * False for the full catch-up of a replica that held nothing when it began: then every
   * entry it ends with came from the server (the answer, or broadcasts meanwhile) or is a
   * local write (which impose skips), so there is nothing to impose and `seen` is not
   * kept (the bulk of a first connect's cost otherwise).
   */
  track = true;
  constructor(
    public kind: AnswerKind,
    public scopeIn: readonly string[] = [],
    public scopeOut: readonly string[] = [],
    public paths: ReadonlySet<string> | null = null,
  ) {}
  covers(path: string): boolean {
    if (this.paths !== null) return this.paths.has(path);
    return anyPrefixMatches(this.scopeIn, path) && !(this.scopeOut.length && anyPrefixMatches(this.scopeOut, path));
  }
}

export interface HelloPlan {
  mode: SyncMode;
  cursor: number | null;
  catchup: boolean;
  subscribe: string[];
}

/** A local write the server (or the replica, before sending) refused; it was rolled back. */
export interface RefusedChange {
  change: Change;
  code: string;
  message: string;
}

/** A local write the server acknowledged but that lost LWW to the entry at `seq`. */
export interface SupersededChange {
  change: Change;
  seq: number;
}

export interface Settled {
  refused: RefusedChange[];
  reverted: Change[];
  retry: boolean;
  superseded: SupersededChange[];
}

export interface Received {
  changed: Change[];
  finished: Answer | null;
}

export interface AckRefusal {
  index: number;
  code?: string;
  message?: string;
  /** Set when the server stored nothing and wants the write again (a failed commit). */
  retry_after_ms?: number;
}

interface Flight {
  changes: Change[];
  floor: number;
  firstSend: boolean[];
}

function settled(partial: Partial<Settled> = {}): Settled {
  return { refused: [], reverted: [], retry: false, superseded: [], ...partial };
}

function vanished(entry: Change): Change {
  return { path: entry.path, ts: entry.ts, counter: entry.counter, actor: entry.actor, value: null, seq: null };
}

function seqNum(seq: U64 | null): number {
  return seq === null ? 0 : Number(seq);
}

function prefixesOf(prefixes: readonly string[]): string[] {
  if (typeof prefixes === "string") throw new TypeError("prefixes must be an array of strings, not one string");
  const out = [...new Set(prefixes.map(validatePrefix))];
  return out.length ? out : ["/"];
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class Replica {
  readonly actor: string;
  readonly maxInflight: number;
  readonly clock = new HybridClock();
  readonly entries = new Map<string, Change>();
  readonly tree = new MerkleSearchTree();
  cursor = 0;
  prefixes: string[];
  syncedPrefixes: string[];
  mode: SyncMode | null = null;

  private buffer = new Map<string, Change>();
  private inflightPacks: Flight[] = [];
  private sent = new Set<Change>();
  private seenSeq = 0;
  private wantedPaths = new Map<string, number>();
  private canRead = true;
  private pendingCount = new Map<string, number>();
  private base = new Map<string, Change | null>();
  private answers: Answer[] = [];
  private full: Answer | null = null;
  private resyncNeeded = false;
  private ready = false;
  private mark = 0;
  private welcomeHead = 0;

  constructor(actor: string, opts: { subscribe?: readonly string[]; maxInflight?: number } = {}) {
    if (!actor || new TextEncoder().encode(actor).length > MAX_ACTOR_BYTES) {
      throw new RangeError(`actor must be 1..${MAX_ACTOR_BYTES} UTF-8 bytes`);
    }
    this.actor = actor;
    this.maxInflight = opts.maxInflight ?? DEFAULT_MAX_INFLIGHT;
    if (this.maxInflight < 1) throw new RangeError("maxInflight must be >= 1");
    this.prefixes = prefixesOf(opts.subscribe ?? ["/"]);
    this.syncedPrefixes = this.prefixes;
  }

  // -- reading --------------------------------------------------------------------------

  get rootHex(): string {
    return this.tree.rootHex;
  }

  /** The live entry at `path`, or undefined (absent or deleted). */
  get(path: string): Change | undefined {
    const c = this.entries.get(path);
    return c !== undefined && c.value !== null ? c : undefined;
  }

  /** Live entries at or below `prefix`, sorted by path (UTF-8 order). */
  items(prefix = "/"): Change[] {
    prefix = validatePrefix(prefix);
    const paths = sortUtf8([...this.entries.keys()].filter((p) => prefixMatches(prefix, p)));
    const out: Change[] = [];
    for (const p of paths) {
      const c = this.entries.get(p)!;
      if (c.value !== null) out.push(c);
    }
    return out;
  }

  /** Every local write is settled and every wanted winner has arrived. */
  get idle(): boolean {
    return this.buffer.size === 0 && this.inflightPacks.length === 0 && this.wantedPaths.size === 0;
  }

  get unsent(): Change[] {
    return [...this.buffer.values()];
  }

  get inflight(): Change[][] {
    return this.inflightPacks.map((f) => [...f.changes]);
  }

  get wanted(): Map<string, number> {
    return new Map(this.wantedPaths);
  }

  get pending(): number {
    let n = this.buffer.size;
    for (const f of this.inflightPacks) n += f.changes.length;
    return n;
  }

  isPending(path: string): boolean {
    return this.pendingCount.has(path);
  }

  get synced(): boolean {
    return this.ready;
  }

  get needsResync(): boolean {
    return this.resyncNeeded;
  }

  // -- local writes ---------------------------------------------------------------------

  /** Apply a local write (`value` null deletes) and queue it. Throws InvalidPath. */
  write(path: string, value: Uint8Array | null, nowMs: number): Change {
    validatePath(path);
    if (value !== null && !isBytes(value)) throw new TypeError("value must be a Uint8Array or null");
    const [ts, counter] = this.clock.tick(nowMs);
    const change: Change = { path, ts, counter, actor: this.actor, value: value === null ? null : value.slice(), seq: null };
    if (!this.pendingCount.has(path)) this.base.set(path, this.entries.get(path) ?? null);
    this.pendingCount.set(path, (this.pendingCount.get(path) ?? 0) + 1);
    const older = this.buffer.get(path);
    if (older !== undefined) {
      this.buffer.delete(path);
      this.forget(older);
    }
    this.buffer.set(path, change);
    this.setEntry(change);
    return change;
  }

  /** The next pack to send (now in flight), or null (nothing queued, or the window is full). */
  takeOutgoing(maxChanges: number, maxBytes: number): Change[] | null {
    if (this.buffer.size === 0 || this.inflightPacks.length >= this.maxInflight) return null;
    const pack: Change[] = [];
    let size = PACK_OVERHEAD;
    for (const c of this.buffer.values()) {
      const n = encodedSize(c);
      if (pack.length && (pack.length >= maxChanges || size + n > maxBytes)) break;
      pack.push(c);
      size += n;
    }
    const first: boolean[] = [];
    for (const c of pack) {
      first.push(!this.sent.has(c));
      this.sent.add(c);
      this.buffer.delete(c.path);
    }
    this.inflightPacks.push({ changes: pack, floor: this.seenSeq, firstSend: first });
    return pack;
  }

  /** Refuse (`too-large`) queued writes that alone exceed `maxBytes`. */
  refuseOversize(maxBytes: number): Settled {
    const big = [...this.buffer.values()].filter((c) => encodedSize(c) + PACK_OVERHEAD > maxBytes);
    for (const c of big) this.buffer.delete(c.path);
    return this.refuse(big, "too-large", `change larger than the largest pack this server accepts (${maxBytes} bytes)`);
  }

  /** Refuse every queued write (e.g. the session has no `write` capability). */
  refuseUnsent(code: string, message: string): Settled {
    const changes = [...this.buffer.values()];
    this.buffer.clear();
    return this.refuse(changes, code, message);
  }

  // -- acknowledgements -----------------------------------------------------------------

  /** Settle the oldest pack in flight with `ack{seqs, refused, superseded}`. */
  onAck(seqs: readonly (number | null)[], refused: readonly AckRefusal[] = [], superseded: readonly { index: number; seq?: number }[] = []): Settled {
    const flight = this.inflightPacks.shift();
    if (flight === undefined) return settled();
    const pack = flight.changes;
    const reasons = new Map<number, [string, string]>();
    // Refused for now: the server asks for them again (retry_after_ms, e.g. a full disk).
    const later = new Set<number>();
    for (const item of refused) {
      if (Number.isInteger(item.index)) {
        reasons.set(item.index, [String(item.code ?? "refused"), String(item.message ?? "")]);
        const hint = item.retry_after_ms;
        if (typeof hint === "number" && Number.isInteger(hint) && hint >= 0) later.add(item.index);
      }
    }
    const whole = reasons.get(-1);
    if (whole !== undefined) {
      const [code, message] = whole;
      if (code === "rate-limited" || later.has(-1)) {
        this.requeue([pack]);
        return settled({ retry: true });
      }
      return this.refuse(pack, code, message);
    }
    const listed = new Set<number>();
    for (const item of superseded) if (Number.isInteger(item.index)) listed.add(item.index);
    const bad: [Change, string, string][] = [];
    const again: Change[] = [];
    const lost: SupersededChange[] = [];
    pack.forEach((change, index) => {
      const seq = index < seqs.length ? seqs[index] : null;
      if (typeof seq === "number" && Number.isInteger(seq)) {
        const fresh = index < flight.firstSend.length && flight.firstSend[index]!;
        if (this.lost(change, seq, listed.has(index), fresh, flight)) lost.push({ change, seq });
        else this.forget(change);
        this.advance(seq);
        this.seenSeq = Math.max(this.seenSeq, seq);
      } else if (later.has(index)) {
        again.push(change);
      } else {
        const [code, message] = reasons.get(index) ?? ["internal", "the ack carried no seq"];
        bad.push([change, code, message]);
      }
    });
    if (again.length > 0) this.requeue([again]);
    const result = this.refuseEach(bad);
    const reverted = [...result.reverted];
    for (const item of lost) reverted.push(...this.supersede(item));
    return settled({ refused: result.refused, reverted, retry: again.length > 0, superseded: lost });
  }

  private lost(change: Change, seq: number, listed: boolean, fresh: boolean, flight: Flight): boolean {
    if (listed) return true;
    if (fresh && seq <= flight.floor) return true;
    const holder = this.entries.get(change.path);
    return holder !== undefined && seqNum(holder.seq) === seq && holder.seq !== null && !sameKey(holder, change) && wins(holder, change);
  }

  private supersede(item: SupersededChange): Change[] {
    const { change } = item;
    const path = change.path;
    const reverted: Change[] = [];
    if (this.entries.get(path) === change) {
      const base = this.base.get(path) ?? null;
      if (base === null) {
        this.dropEntry(path);
        if (change.value !== null) reverted.push(vanished(change));
      } else {
        this.setEntry(base);
        reverted.push(base);
      }
    }
    this.forget(change);
    const holder = this.entries.get(path);
    if (this.canRead && (holder === undefined || seqNum(holder.seq) < item.seq)) {
      this.wantedPaths.set(path, Math.max(item.seq, this.wantedPaths.get(path) ?? 0));
    }
    return reverted;
  }

  /** Paths to fetch with `request{paths}` now (wanted winners no outstanding request covers). */
  fetchPaths(): string[] {
    if (!this.ready || this.wantedPaths.size === 0) return [];
    const asked = new Set<string>();
    for (const a of this.answers) if (a.kind === "paths" && a.paths) for (const p of a.paths) asked.add(p);
    return [...this.wantedPaths.keys()].filter((p) => !asked.has(p)).sort(compareUtf8);
  }

  /** After a disconnect: packs in flight go back to the front of the queue. */
  requeueInflight(): void {
    const packs = this.inflightPacks.map((f) => f.changes);
    this.inflightPacks = [];
    this.requeue(packs);
  }

  private requeue(packs: Change[][]): void {
    const front = new Map<string, Change>();
    for (const pack of packs) {
      for (const c of pack) {
        const older = front.get(c.path);
        if (older !== undefined) {
          front.delete(c.path);
          this.forget(older);
        }
        front.set(c.path, c);
      }
    }
    for (const [path, c] of [...front]) {
      if (this.buffer.has(path)) {
        front.delete(path);
        this.forget(c);
      }
    }
    for (const [path, c] of this.buffer) front.set(path, c);
    this.buffer = front;
  }

  // -- sessions -------------------------------------------------------------------------

  /** The server closed with 4001: the next session resyncs. */
  resyncRequired(): void {
    this.resyncNeeded = true;
  }

  /** Plan the `hello` of a new connection and expect its catch-up. */
  startSession(canReconcile: boolean): HelloPlan {
    this.answers = [];
    this.ready = false;
    this.mark = 0;
    this.welcomeHead = 0;
    this.seenSeq = 0;
    if (this.resyncNeeded) {
      this.full = null;
      this.cursor = 0;
      this.syncedPrefixes = this.prefixes;
      if (canReconcile && sameList(this.prefixes, ["/"])) {
        this.mode = "reconcile";
        return { mode: this.mode, cursor: null, catchup: false, subscribe: [...this.prefixes] };
      }
      this.resyncNeeded = false;
    }
    if (this.full === null && this.cursor > 0) {
      this.mode = "resume";
      this.answers.push(new Answer("catchup", this.syncedPrefixes));
      return { mode: this.mode, cursor: this.cursor, catchup: true, subscribe: [...this.syncedPrefixes] };
    }
    if (this.full === null) {
      this.syncedPrefixes = this.prefixes;
      this.full = new Answer("full", this.prefixes);
      this.full.track = this.entries.size > 0;
    }
    this.mode = "full";
    this.answers.push(this.full);
    return { mode: this.mode, cursor: this.cursor || null, catchup: true, subscribe: [...this.full.scopeIn] };
  }

  /** The session was welcomed at room `head`. */
  onWelcome(head: number, canRead = true): void {
    this.welcomeHead = head;
    this.seenSeq = Math.max(this.seenSeq, head);
    this.canRead = canRead;
    if (!canRead) {
      this.answers = [];
      this.wantedPaths.clear();
      this.resyncNeeded = false;
      this.ready = true;
    }
  }

  /** The MST resync of this session is complete: publish the cursor. */
  finishResync(): void {
    this.resyncNeeded = false;
    this.ready = true;
    this.cursor = Math.max(this.cursor, this.welcomeHead, this.mark);
  }

  /** Expect the (authoritative) answer of a `request{paths}` about to be sent. */
  expectPaths(paths: Iterable<string>): Answer {
    const answer = new Answer("paths", [], [], new Set(paths));
    this.answers.push(answer);
    return answer;
  }

  setPrefixes(prefixes: readonly string[]): void {
    this.prefixes = prefixesOf(prefixes);
  }

  /** When the wanted prefixes differ from the synced ones: expect a `subscribe` answer. */
  expectSubscribe(): Answer | null {
    if (sameList(this.prefixes, this.syncedPrefixes) || this.answers.some((a) => a.kind === "subscribe")) return null;
    const answer = new Answer("subscribe", this.prefixes, this.syncedPrefixes);
    this.answers.push(answer);
    return answer;
  }

  /** The server refused the oldest outstanding request of `kind`. */
  answerFailed(kind: AnswerKind): Answer | null {
    const i = this.answers.findIndex((a) => a.kind === kind);
    if (i < 0) return null;
    const [answer] = this.answers.splice(i, 1);
    this.settleWanted(answer!);
    return answer!;
  }

  // -- remote changes -------------------------------------------------------------------

  private merge(changes: readonly Change[]): Change[] {
    const changed: Change[] = [];
    let top = 0;
    const answers = this.answers;
    const entries = this.entries;
    const wanted = this.wantedPaths;
    const hasBase = this.base.size > 0;
    for (const change of changes) {
      this.clock.observe(change.ts, change.counter);
      if (change.seq !== null) {
        const seq = Number(change.seq);
        if (seq > top) top = seq;
        if (wanted.size) {
          const w = wanted.get(change.path);
          if (w !== undefined && seq >= w) wanted.delete(change.path);
        }
        for (let i = 0; i < answers.length; i++) {
          const answer = answers[i]!;
          if (answer.track) see(answer, change, seq);
        }
      }
      if (wins(change, entries.get(change.path))) {
        this.setEntry(change);
        changed.push(change);
      }
      if (hasBase && this.base.has(change.path)) {
        const b = this.base.get(change.path) ?? null;
        if (wins(change, b)) this.base.set(change.path, change);
      }
    }
    this.seenSeq = Math.max(this.seenSeq, top);
    return changed;
  }

  /** Merge a server `pack` (broadcast, catch-up chunk or answer chunk). */
  receive(changes: readonly Change[], head: number | null, done: boolean): Received {
    const changed = this.merge(changes);
    const answer = this.answers[0];
    if (answer !== undefined && (answer.kind === "catchup" || answer.kind === "full")) {
      if (head !== null) this.cursor = Math.max(this.cursor, head);
      if (!done) return { changed, finished: null };
      this.answers.shift();
      if (answer.kind === "full") {
        if (answer.track) changed.push(...this.impose(answer));
        this.full = null;
      }
      this.ready = true;
      this.cursor = Math.max(this.cursor, this.mark);
      return { changed, finished: answer };
    }
    if (answer !== undefined) {
      if (!done) return { changed, finished: null };
      this.answers.shift();
      changed.push(...this.impose(answer));
      this.settleWanted(answer);
      if (answer.kind === "subscribe") this.syncedPrefixes = [...answer.scopeIn];
      return { changed, finished: answer };
    }
    let top = 0;
    for (const c of changes) if (c.seq !== null && Number(c.seq) > top) top = Number(c.seq);
    if (top) this.advance(top);
    return { changed, finished: null };
  }

  /** Merge entries a reconcile received as authoritative for their own paths. */
  imposeEntries(changes: readonly Change[]): Change[] {
    const answer = new Answer("paths", [], [], new Set(changes.map((c) => c.path)));
    for (const c of changes) if (c.seq !== null) see(answer, c, Number(c.seq));
    const changed = this.merge(changes);
    changed.push(...this.impose(answer));
    return changed;
  }

  // -- internals ------------------------------------------------------------------------

  private settleWanted(answer: Answer): void {
    if (answer.kind === "paths" && answer.paths) for (const p of answer.paths) this.wantedPaths.delete(p);
  }

  private advance(seq: number): void {
    if (this.ready) this.cursor = Math.max(this.cursor, seq);
    else this.mark = Math.max(this.mark, seq);
  }

  private setEntry(change: Change): void {
    this.entries.set(change.path, change);
    this.tree.put(change);
  }

  private dropEntry(path: string): void {
    this.entries.delete(path);
    this.tree.remove(path);
  }

  private forget(change: Change): void {
    const path = change.path;
    const left = (this.pendingCount.get(path) ?? 0) - 1;
    if (left > 0) this.pendingCount.set(path, left);
    else {
      this.pendingCount.delete(path);
      this.base.delete(path);
    }
    this.sent.delete(change);
  }

  private refuse(changes: Change[], code: string, message: string): Settled {
    return this.refuseEach(changes.map((c) => [c, code, message]));
  }

  private refuseEach(items: [Change, string, string][]): Settled {
    const refused: RefusedChange[] = [];
    const reverted: Change[] = [];
    for (const [change, code, message] of items) {
      refused.push({ change, code, message });
      const path = change.path;
      if (this.entries.get(path) === change) {
        const base = this.base.get(path) ?? null;
        if (base === null) {
          this.dropEntry(path);
          if (change.value !== null) reverted.push(vanished(change));
        } else {
          this.setEntry(base);
          reverted.push(base);
        }
      }
      this.forget(change);
    }
    return settled({ refused, reverted });
  }

  private impose(answer: Answer): Change[] {
    const changed: Change[] = [];
    const { seen } = answer;
    const whole = answer.paths === null && answer.scopeIn.includes("/") && answer.scopeOut.length === 0;
    const paths: string[] = [];
    for (const p of this.entries.keys()) {
      if (this.pendingCount.has(p)) continue;
      if (whole || answer.covers(p)) paths.push(p);
    }
    for (const path of paths) {
      const server = seen.get(path);
      const mine = this.entries.get(path)!;
      if (server === mine) continue;
      if (server === undefined) {
        this.dropEntry(path);
        if (mine.value !== null) changed.push(vanished(mine));
      } else if (!sameKey(server, mine) || !sameValue(server.value, mine.value)) {
        this.setEntry(server);
        changed.push(server);
      }
    }
    return changed;
  }
}

function see(answer: Answer, change: Change, seq: number): void {
  const known = answer.seen.get(change.path);
  if (known === undefined || seqNum(known.seq) < seq) answer.seen.set(change.path, change);
}

function sameValue(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === b) return true;
  if (a === null || b === null || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
