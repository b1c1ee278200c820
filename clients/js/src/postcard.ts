/**
 * The postcard binary format for the types SPEC §1 and §2 fix (layout: vectors/README.md).
 *
 * ```
 * struct Pack      { changes: Vec<Change> }
 * struct Change    { path: String, ts: u64, counter: u32, actor: String, op: Op, seq: Option<u64> }
 * enum   Op        { Set(Vec<u8>) = 0, Delete = 1 }
 * struct Leaf      { path: String, ts: u64, counter: u32, actor: String, value: Vec<u8> }
 * struct Node      { left: Option<[u8;32]>, entries: Vec<NodeEntry> }
 * struct NodeEntry { path: String, leaf: [u8;32], right: Option<[u8;32]> }
 * ```
 *
 * Decoding is strict and reports the same `bad postcard: …` texts as the Python core
 * (`roomsync.core.postcard`): truncated input, overlong or overflowing varints, trailing
 * bytes, invalid UTF-8, unknown tags and lengths past the input are {@link CodecError}s.
 *
 * A `u64` is a JS `number` while it is a safe integer (every real HLC timestamp and seq)
 * and a `bigint` beyond 2^53 − 1; encoders take either.
 */

import { CodecError } from "./errors.js";

/** A u64: a number when safe, a bigint beyond `Number.MAX_SAFE_INTEGER`. */
export type U64 = number | bigint;

/** One change of a room (SPEC §1 entry): `value` null is a delete (tombstone). */
export interface Change {
  readonly path: string;
  readonly ts: U64;
  readonly counter: number;
  readonly actor: string;
  readonly value: Uint8Array | null;
  readonly seq: U64 | null;
}

export const U32_MAX = 0xffff_ffff;
export const U64_MAX = 0xffff_ffff_ffff_ffffn;
export const HASH_LEN = 32;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_CHANGE_BYTES = 6;
const POW7 = Array.from({ length: 8 }, (_, i) => 2 ** (7 * i));

const utf8 = new TextEncoder();
const CHAR_CODES: number[] = [];
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

function bad(reason: string): CodecError {
  return new CodecError(`bad postcard: ${reason}`);
}

/** UTF-8 bytes of `text` (fast for ASCII). */
export function utf8Encode(text: string): Uint8Array {
  return utf8.encode(text);
}

// -- writing ---------------------------------------------------------------------------

/** Appends postcard primitives to a growing buffer. */
export class Writer {
  buf: Uint8Array;
  pos = 0;
  constructor(capacity = 256) {
    this.buf = new Uint8Array(capacity);
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }
  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }
  varint(value: U64): void {
    if (typeof value === "bigint") {
      if (value <= MAX_SAFE) {
        this.varint(Number(value));
        return;
      }
      this.ensure(10);
      let v = value;
      while (v >= 0x80n) {
        this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
        v >>= 7n;
      }
      this.buf[this.pos++] = Number(v);
      return;
    }
    this.ensure(10);
    let v = value;
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }
  u32(value: number, what: string): void {
    if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
      throw new RangeError(`u32 out of range: ${what} ${value}`);
    }
    this.varint(value);
  }
  u64(value: U64, what: string): void {
    if (typeof value === "number") {
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new RangeError(`u64 out of range: ${what} ${value}`);
      }
    } else if (value < 0n || value > U64_MAX) {
      throw new RangeError(`u64 out of range: ${what} ${value}`);
    }
    this.varint(value);
  }
  bytes(data: Uint8Array): void {
    this.varint(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }
  string(text: string): void {
    // ASCII fast path: one byte per char.
    const n = text.length;
    if (n < 0x80) {
      this.ensure(n + 1);
      const buf = this.buf;
      const start = this.pos;
      let i = 0;
      for (; i < n; i++) {
        const c = text.charCodeAt(i);
        if (c >= 0x80) break;
        buf[start + 1 + i] = c;
      }
      if (i === n) {
        buf[start] = n;
        this.pos = start + 1 + n;
        return;
      }
    }
    this.bytes(utf8.encode(text));
  }
  raw(data: Uint8Array): void {
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }
  hash32(digest: Uint8Array): void {
    if (digest.length !== HASH_LEN) throw new RangeError("a [u8;32] must be exactly 32 bytes");
    this.raw(digest);
  }
  optionHash32(digest: Uint8Array | null): void {
    if (digest === null) this.byte(0);
    else {
      this.byte(1);
      this.hash32(digest);
    }
  }
  /** UTF-8 bytes of `text` without a length prefix. */
  utf8(text: string): void {
    const n = text.length;
    this.ensure(n * 3);
    const buf = this.buf;
    let pos = this.pos;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) {
        const r = utf8.encodeInto(text.slice(i), buf.subarray(pos));
        this.pos = pos + r.written;
        return;
      }
      buf[pos++] = c;
    }
    this.pos = pos;
  }
  /** The bytes written so far, as a view (valid until the next write or reset). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
  reset(): this {
    this.pos = 0;
    return this;
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** A scratch writer for bytes that are hashed at once and never kept (MST leaves, levels). */
export const scratch = new Writer(4096);

// -- reading ---------------------------------------------------------------------------

/** Reads postcard primitives; every failure is a {@link CodecError} `bad postcard: …`. */
export class Reader {
  readonly data: Uint8Array;
  pos = 0;
  constructor(data: Uint8Array) {
    this.data = data;
  }

  private varintOf(maxBytes: number, maxValue: number | bigint, what: string): U64 {
    const data = this.data;
    const start = this.pos;
    let pos = start;
    let result = 0;
    let big: bigint | null = null;
    for (let i = 0; i < maxBytes; i++) {
      if (pos >= data.length) throw bad(`truncated ${what} at byte ${pos}`);
      const b = data[pos++]!;
      const low = b & 0x7f;
      if (i < 7) result += low * POW7[i]!;
      else {
        if (big === null) big = BigInt(result);
        big |= BigInt(low) << BigInt(7 * i);
      }
      if (b < 0x80) {
        if (b === 0 && i > 0) throw bad(`overlong ${what} at byte ${start}`);
        const value: U64 = big ?? result;
        if (value > maxValue) throw bad(`${what} overflows at byte ${start}`);
        this.pos = pos;
        return typeof value === "bigint" && value <= MAX_SAFE ? Number(value) : value;
      }
    }
    throw bad(`overlong ${what} at byte ${start}`);
  }

  u32(what = "u32"): number {
    return this.varintOf(5, U32_MAX, what) as number;
  }
  u64(what = "u64"): U64 {
    return this.varintOf(10, U64_MAX, what);
  }
  length(what: string): number {
    const n = this.varintOf(10, U64_MAX, `${what} length`);
    if (n > this.data.length - this.pos) {
      throw bad(`${what} length ${n} past end of input at byte ${this.pos}`);
    }
    return n as number;
  }
  bytes(what = "bytes"): Uint8Array {
    const n = this.length(what);
    const start = this.pos;
    this.pos = start + n;
    return this.data.subarray(start, start + n);
  }
  string(what = "string"): string {
    const at = this.pos;
    const n = this.length(what);
    const data = this.data;
    const start = this.pos;
    const end = start + n;
    this.pos = end;
    if (n <= 64) {
      // ASCII fast path: TextDecoder's call overhead dominates for short strings.
      let ascii = true;
      for (let i = start; i < end; i++) {
        if (data[i]! >= 0x80) {
          ascii = false;
          break;
        }
      }
      if (ascii) {
        const codes = CHAR_CODES;
        codes.length = n;
        for (let i = 0; i < n; i++) codes[i] = data[start + i]!;
        return String.fromCharCode.apply(null, codes);
      }
    }
    try {
      return utf8Strict.decode(data.subarray(start, end));
    } catch {
      throw bad(`invalid UTF-8 in ${what} at byte ${at}`);
    }
  }
  hash32(what = "hash"): Uint8Array {
    if (this.data.length - this.pos < HASH_LEN) throw bad(`truncated ${what} at byte ${this.pos}`);
    const start = this.pos;
    this.pos += HASH_LEN;
    return this.data.slice(start, start + HASH_LEN);
  }
  optionTag(what: string): boolean {
    if (this.pos >= this.data.length) throw bad(`truncated ${what} option at byte ${this.pos}`);
    const tag = this.data[this.pos]!;
    if (tag > 1) throw bad(`invalid option tag ${tag} for ${what} at byte ${this.pos}`);
    this.pos += 1;
    return tag === 1;
  }
  optionHash32(what: string): Uint8Array | null {
    return this.optionTag(what) ? this.hash32(what) : null;
  }
  sequenceLength(what: string, minItemBytes: number): number {
    const n = this.varintOf(10, U64_MAX, `${what} count`);
    if (Number(n) * minItemBytes > this.data.length - this.pos) {
      throw bad(`${what} count ${n} past end of input at byte ${this.pos}`);
    }
    return n as number;
  }
  finish(): void {
    if (this.pos !== this.data.length) {
      throw bad(`${this.data.length - this.pos} trailing bytes at byte ${this.pos}`);
    }
  }
}

// -- Change / Pack ---------------------------------------------------------------------

export function writeChange(w: Writer, change: Change, seqs = true): void {
  w.string(change.path);
  w.u64(change.ts, `ts of ${change.path}`);
  w.u32(change.counter, `counter of ${change.path}`);
  w.string(change.actor);
  if (change.value === null) w.byte(1);
  else {
    w.byte(0);
    w.bytes(change.value);
  }
  const seq = seqs ? change.seq : null;
  if (seq === null || seq === undefined) w.byte(0);
  else {
    w.byte(1);
    w.u64(seq, `seq of ${change.path}`);
  }
}

export function readChange(r: Reader): Change {
  const path = r.string("path");
  const ts = r.u64("ts");
  const counter = r.u32("counter");
  const actor = r.string("actor");
  const opPos = r.pos;
  const tag = r.u32("op tag");
  let value: Uint8Array | null;
  if (tag === 0) value = r.bytes("value");
  else if (tag === 1) value = null;
  else throw bad(`unknown Op tag ${tag} at byte ${opPos}`);
  const seq = r.optionTag("seq") ? r.u64("seq") : null;
  return { path, ts, counter, actor, value, seq };
}

/** `Pack { changes }` as postcard bytes; `seqs: false` writes every seq as None. */
export function encodePack(changes: readonly Change[], opts: { seqs?: boolean } = {}): Uint8Array {
  const w = new Writer(64 + changes.length * 48);
  w.varint(changes.length);
  const seqs = opts.seqs ?? true;
  for (const c of changes) writeChange(w, c, seqs);
  return w.finish();
}

/** Decode `Pack` bytes; {@link CodecError} on any deviation from the format. */
export function decodePack(data: Uint8Array): Change[] {
  const r = new Reader(data);
  const n = r.sequenceLength("changes", MIN_CHANGE_BYTES);
  const out: Change[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readChange(r);
  r.finish();
  return out;
}

/** A lone `Change` (not inside a Pack), strict. */
export function decodeChange(data: Uint8Array): Change {
  const r = new Reader(data);
  const change = readChange(r);
  r.finish();
  return change;
}

export function encodeChange(change: Change): Uint8Array {
  const w = new Writer();
  writeChange(w, change);
  return w.finish();
}

// -- MST Leaf / Node (SPEC §1) ---------------------------------------------------------

/** `Leaf { path, ts, counter, actor, value }` of a live entry. */
export function encodeLeaf(change: Change): Uint8Array {
  const w = new Writer(change.path.length + change.actor.length + (change.value?.length ?? 0) + 24);
  writeLeaf(w, change);
  return w.finish();
}

/** Append the `Leaf` of a live entry to `w`. */
export function writeLeaf(w: Writer, change: Change): void {
  if (change.value === null) throw new RangeError("tombstones have no MST leaf");
  w.string(change.path);
  w.u64(change.ts, `ts of ${change.path}`);
  w.u32(change.counter, `counter of ${change.path}`);
  w.string(change.actor);
  w.bytes(change.value);
}

/** One entry of an MST node: `NodeEntry { path, leaf, right }`. */
export interface NodeEntry {
  path: string;
  leaf: Uint8Array;
  right: Uint8Array | null;
}

export interface MstNode {
  left: Uint8Array | null;
  entries: NodeEntry[];
}

export function encodeNode(left: Uint8Array | null, entries: readonly NodeEntry[]): Uint8Array {
  const w = new Writer(8 + entries.length * 96);
  w.optionHash32(left);
  w.varint(entries.length);
  for (const e of entries) {
    w.string(e.path);
    w.hash32(e.leaf);
    w.optionHash32(e.right);
  }
  return w.finish();
}

export function decodeNode(data: Uint8Array): MstNode {
  const r = new Reader(data);
  const left = r.optionHash32("left");
  const n = r.sequenceLength("entries", 1 + HASH_LEN + 1);
  const entries: NodeEntry[] = [];
  for (let i = 0; i < n; i++) {
    const path = r.string("path");
    const leaf = r.hash32("leaf");
    const right = r.optionHash32("right");
    entries.push({ path, leaf, right });
  }
  r.finish();
  return { left, entries };
}

/** Bytes of `change` inside a postcard Pack, computed without encoding (pack sizing). */
export function encodedSize(change: Change): number {
  const path = utf8ByteLength(change.path);
  const actor = utf8ByteLength(change.actor);
  let size = varintLen(path) + path + varintLen(change.ts) + varintLen(change.counter);
  size += varintLen(actor) + actor + 1;
  if (change.value !== null) size += varintLen(change.value.length) + change.value.length;
  return change.seq === null ? size + 1 : size + 1 + varintLen(change.seq);
}

export function varintLen(value: U64): number {
  let n = 1;
  if (typeof value === "bigint") {
    while (value >= 0x80n) {
      value >>= 7n;
      n++;
    }
    return n;
  }
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    n++;
  }
  return n;
}

export function utf8ByteLength(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
