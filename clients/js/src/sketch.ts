/**
 * Batched MST reconcile, the client's half (docs/protocol.md "Batched reconcile"): a port
 * of the client parts of `roomsync.core.sketch` — slot fingerprints, leaf digests and
 * checksums, the `mst-probe` body (`ProbeRequest`) and the `mst-sketch` answer
 * (`SketchAnswer`). Golden vectors: vectors/sketch.json.
 *
 * ```
 * ProbeRequest = bits: u8 | leaf_bits: u8 | budget: varint | probes: varint n, Probe × n
 * Probe        = flags: u8 | [lo: Bound] | [hi: Bound] | body   (sketch: depth u8; leaves: count, digests)
 * SketchAnswer = root: [u8;32] | results: varint n, Result × n | entries_flags: u8 | entries: Vec<u8>
 * ```
 */

import { inflateRaw } from "./binpack.js";
import { sha256 } from "./bytes.js";
import { CodecError, MalformedEnvelope } from "./errors.js";
import type { Region } from "./mst.js";
import { decodePack, Reader, Writer, type Change } from "./postcard.js";

export const BITS_MIN = 4;
export const BITS_MAX = 32;
export const DEFAULT_BITS = 20;
export const DEFAULT_LEAF_BITS = 6;
export const MAX_PROBES = 4096;
export const MAX_DIGESTS = 65_536;
export const MAX_SLOTS = 16_384;
export const MAX_DEPTH = 8;
export const MAX_LEAVES = 256;
export const MAX_BOUND_BYTES = 1024;
export const MAX_INFLATED_BYTES = 64 << 20;

const FLAG_LO = 0x01;
const FLAG_LO_INCL = 0x02;
const FLAG_HI = 0x04;
const FLAG_LEAVES = 0x08;
const ENTRIES_DEFLATED = 0x01;
const RESULT_DEFERRED = 0;
const RESULT_SKETCH = 1;
const RESULT_LEAVES = 2;
const RESULT_NAMED = 3;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

function bad(reason: string): CodecError {
  return new CodecError(`bad postcard: ${reason}`);
}

// -- fingerprints ------------------------------------------------------------------------

/** The 32-bit fingerprint of a slot: SHA-256 of postcard `SlotDigest{lo, lo_incl, leaf, child, hi}`. */
export function slotDigest32(
  lo: string | null,
  loIncl: boolean,
  leaf: Uint8Array | null,
  child: Uint8Array | null,
  hi: string | null,
): number {
  const w = new Writer(128);
  const optStr = (text: string | null): void => {
    if (text === null) w.byte(0);
    else {
      w.byte(1);
      w.string(text);
    }
  };
  optStr(lo);
  w.byte(loIncl ? 1 : 0);
  w.optionHash32(leaf);
  w.optionHash32(child);
  optStr(hi);
  const d = sha256(w.view());
  return ((d[0]! << 24) | (d[1]! << 16) | (d[2]! << 8) | d[3]!) >>> 0;
}

export function slotFp32(region: Region): number {
  return slotDigest32(region.lo, region.loIncl, region.lower, region.childHash(), region.hi);
}

/** The fingerprints (top `bits` bits) of the slots of `region`, in order. */
export function regionFps(region: Region, bits: number): number[] {
  const shift = 32 - bits;
  const out: number[] = [];
  for (let s = 0; s < region.slotCount; s++) out.push(slotFp32(region.slotRegion(s)) >>> shift);
  return out;
}

/** The top `bits` bits of a leaf hash. */
export function leafDigest(leaf: Uint8Array, bits: number): number {
  return (((leaf[0]! << 24) | (leaf[1]! << 16) | (leaf[2]! << 8) | leaf[3]!) >>> 0) >>> (32 - bits);
}

/** Sum of the leaves' first 16 bits, mod 2^16 (a region's content, order-free). */
export function leafChecksum(leaves: Iterable<Uint8Array>): number {
  let sum = 0;
  for (const leaf of leaves) sum = (sum + ((leaf[0]! << 8) | leaf[1]!)) & 0xffff;
  return sum;
}

/** Big-endian bit fields of `bits` bits each, the last byte padded with zeros. */
export function packInts(values: readonly number[], bits: number): Uint8Array {
  const out = new Uint8Array(Math.ceil((values.length * bits) / 8));
  let bit = 0;
  for (const v of values) {
    for (let b = bits - 1; b >= 0; b--) {
      if (Math.floor(v / 2 ** b) & 1) out[bit >> 3]! |= 0x80 >> (bit & 7);
      bit++;
    }
  }
  return out;
}

export function unpackInts(data: Uint8Array, n: number, bits: number): number[] {
  const out: number[] = new Array(n);
  let bit = 0;
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (let b = 0; b < bits; b++) {
      v = v * 2 + ((data[bit >> 3]! >> (7 - (bit & 7))) & 1);
      bit++;
    }
    out[i] = v;
  }
  return out;
}

// -- messages ----------------------------------------------------------------------------

/** One question about region `[lo, hi)`: a sketch (`digests` null) or a leaves probe. */
export interface Probe {
  lo: string | null;
  loIncl: boolean;
  hi: string | null;
  depth: number;
  digests: number[] | null;
}

export interface ProbeRequest {
  bits: number;
  leafBits: number;
  budget: number;
  probes: Probe[];
}

/** The server's slots of one region, and the sub-node of each slot it expanded. */
export interface SketchNode {
  fps: number[];
  children: (SketchNode | null)[] | null;
}

export type ProbeResult =
  | { kind: "deferred" }
  | { kind: "sketch"; node: SketchNode; names: string[] | null }
  | { kind: "leaves"; unmatched: number[]; entries: Change[]; more: string[]; checksum: number };

export interface SketchAnswer {
  root: Uint8Array | null;
  results: ProbeResult[];
}

function writeBound(w: Writer, text: string, prev: Uint8Array): Uint8Array {
  const raw = utf8.encode(text);
  let shared = 0;
  const limit = Math.min(raw.length, prev.length);
  while (shared < limit && raw[shared] === prev[shared]) shared++;
  w.varint(shared);
  w.bytes(raw.subarray(shared));
  return raw;
}

function readBound(r: Reader, prev: Uint8Array): [string, Uint8Array] {
  const shared = r.u32("bound prefix");
  if (shared > prev.length) throw bad(`bound shares ${shared} bytes of a ${prev.length}-byte one`);
  const suffix = r.bytes("bound");
  const raw = new Uint8Array(shared + suffix.length);
  raw.set(prev.subarray(0, shared));
  raw.set(suffix, shared);
  if (raw.length > MAX_BOUND_BYTES) throw bad(`bound of ${raw.length} bytes (at most ${MAX_BOUND_BYTES})`);
  try {
    return [utf8Strict.decode(raw), raw];
  } catch {
    throw bad("bound is not UTF-8");
  }
}

/** Postcard of `mst-probe`'s `data`. */
export function encodeRequest(request: ProbeRequest): Uint8Array {
  const { bits, leafBits } = request;
  if (!(BITS_MIN <= bits && bits <= BITS_MAX && BITS_MIN <= leafBits && leafBits <= BITS_MAX)) {
    throw new RangeError(`bits must be ${BITS_MIN}..${BITS_MAX}`);
  }
  const w = new Writer(256);
  w.byte(bits);
  w.byte(leafBits);
  w.varint(request.budget);
  w.varint(request.probes.length);
  let prev: Uint8Array = new Uint8Array(0);
  for (const p of request.probes) {
    const flags =
      (p.lo !== null ? FLAG_LO : 0) |
      (p.loIncl && p.lo !== null ? FLAG_LO_INCL : 0) |
      (p.hi !== null ? FLAG_HI : 0) |
      (p.digests !== null ? FLAG_LEAVES : 0);
    w.byte(flags);
    if (p.lo !== null) prev = writeBound(w, p.lo, prev);
    if (p.hi !== null) prev = writeBound(w, p.hi, prev);
    if (p.digests === null) w.byte(p.depth);
    else {
      w.varint(p.digests.length);
      w.raw(packInts(p.digests, leafBits));
    }
  }
  return w.finish();
}

function readSketch(r: Reader, bits: number): SketchNode {
  const data = r.data;
  if (r.pos >= data.length) throw bad("truncated sketch");
  const nLevels = data[r.pos++]!;
  if (nLevels < 1 || nLevels > MAX_DEPTH) throw bad(`sketch of ${nLevels} levels`);
  let wanted = 1;
  const levels: [number[], number[] | null][][] = [];
  for (let depth = 0; depth < nLevels; depth++) {
    const row: [number[], number[] | null][] = [];
    let nextWanted = 0;
    for (let k = 0; k < wanted; k++) {
      const count = r.u32("slot count");
      if (count < 1 || count > MAX_SLOTS) throw bad(`node of ${count} slots`);
      const nbytes = Math.ceil((count * bits) / 8);
      if (nbytes > data.length - r.pos) throw bad("fingerprints past end of input");
      const fps = unpackInts(data.subarray(r.pos, r.pos + nbytes), count, bits);
      r.pos += nbytes;
      let kids: number[] | null = null;
      if (depth < nLevels - 1) {
        const mbytes = Math.ceil(count / 8);
        if (mbytes > data.length - r.pos) throw bad("child bitmap past end of input");
        kids = [];
        for (let i = 0; i < count; i++) if (data[r.pos + (i >> 3)]! & (0x80 >> (i & 7))) kids.push(i);
        r.pos += mbytes;
        nextWanted += kids.length;
      }
      row.push([fps, kids]);
    }
    levels.push(row);
    wanted = nextWanted;
  }
  let built: SketchNode[] = [];
  for (let d = levels.length - 1; d >= 0; d--) {
    let at = 0;
    const now: SketchNode[] = [];
    for (const [fps, kids] of levels[d]!) {
      if (kids === null) {
        now.push({ fps, children: null });
        continue;
      }
      const children: (SketchNode | null)[] = new Array(fps.length).fill(null);
      for (const s of kids) {
        const kid = built[at++];
        if (kid === undefined) throw bad("sketch has fewer nodes than its bitmaps say");
        children[s] = kid;
      }
      now.push({ fps, children });
    }
    built = now;
  }
  return built[0]!;
}

/** `mst-sketch`'s `data` as the answer to `request`; {@link CodecError} when it does not fit. */
export function decodeAnswer(data: Uint8Array, request: ProbeRequest): SketchAnswer {
  const r = new Reader(data);
  const root = r.hash32("root");
  const n = r.sequenceLength("results", 1);
  if (n !== request.probes.length) throw bad(`${n} results for ${request.probes.length} probes`);
  const bits = request.bits;
  const pending: [number, number[], number, string[], number][] = [];
  const results: (ProbeResult | null)[] = [];
  request.probes.forEach((probe, i) => {
    if (r.pos >= data.length) throw bad("truncated result");
    const tag = data[r.pos++]!;
    if (tag === RESULT_DEFERRED) results.push({ kind: "deferred" });
    else if (tag === RESULT_SKETCH) results.push({ kind: "sketch", node: readSketch(r, bits), names: null });
    else if (tag === RESULT_NAMED && probe.digests !== null) {
      const node = readSketch(r, bits);
      const names: string[] = [];
      let prev: Uint8Array = new Uint8Array(0);
      for (let k = 0; k < node.fps.length - 1; k++) {
        const [name, raw] = readBound(r, prev);
        names.push(name);
        prev = raw;
      }
      results.push({ kind: "sketch", node, names });
    } else if (tag === RESULT_LEAVES && probe.digests !== null) {
      const count = probe.digests.length;
      const nUnmatched = r.sequenceLength("unmatched", 1);
      const unmatched: number[] = [];
      for (let k = 0; k < nUnmatched; k++) unmatched.push(r.u32("index"));
      for (let k = 0; k < unmatched.length; k++) {
        if (unmatched[k]! >= count || (k > 0 && unmatched[k]! <= unmatched[k - 1]!)) {
          throw bad("unmatched indices out of order or range");
        }
      }
      if (data.length - r.pos < 2) throw bad("truncated checksum");
      const checksum = (data[r.pos]! << 8) | data[r.pos + 1]!;
      r.pos += 2;
      const nEntries = r.u32("entry count");
      const nMore = r.sequenceLength("more", 1);
      const more: string[] = [];
      for (let k = 0; k < nMore; k++) more.push(r.string("path"));
      pending.push([i, unmatched, nEntries, more, checksum]);
      results.push(null);
    } else {
      throw bad(`result tag ${tag} for probe ${i}`);
    }
  });
  if (r.pos >= data.length) throw bad("truncated entries flags");
  const flags = data[r.pos++]!;
  if (flags & ~ENTRIES_DEFLATED) throw bad(`entries flags 0x${flags.toString(16).padStart(2, "0")}`);
  let packed = r.bytes("entries");
  r.finish();
  if (flags & ENTRIES_DEFLATED) {
    try {
      packed = inflateRaw(packed, MAX_INFLATED_BYTES);
    } catch (error) {
      if (error instanceof MalformedEnvelope) throw bad(`entries inflate badly or past the limit (${error.message})`);
      throw error;
    }
  }
  const changes = packed.length ? decodePack(packed) : [];
  if (pending.reduce((s, p) => s + p[2], 0) !== changes.length) throw bad("entry counts do not add up to the entries sent");
  let at = 0;
  for (const [i, unmatched, nEntries, more, checksum] of pending) {
    results[i] = { kind: "leaves", unmatched, entries: changes.slice(at, at + nEntries), more, checksum };
    at += nEntries;
  }
  return { root: root.every((b) => b === 0) ? null : root, results: results as ProbeResult[] };
}
