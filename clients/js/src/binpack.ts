/**
 * Binary `pack` frames (SPEC §2 data cap `binary`, layout in docs/protocol.md):
 *
 * ```
 * client -> server   01 | Pack
 * server -> client   02 | head: varint u64 | flags: u8 | Pack
 *                    flags bit 0 = done; bit 1 = raw DEFLATE (RFC 1951); bits 2-7 reserved (0)
 * ```
 *
 * A deflated Pack is inflated with at most {@link MAX_INFLATED_BYTES} (64 MiB) of output:
 * more is a broken frame (a decompression bomb costs nothing). A frame that is empty, has
 * an unknown tag, sets a reserved flag or does not inflate is a {@link MalformedEnvelope};
 * its Pack is decoded later, like a JSON pack's data ({@link CodecError} when it fails).
 */

import { Inflate } from "fflate";
import { CodecError, MalformedEnvelope } from "./errors.js";
import { encodePack, Reader, type Change, type U64 } from "./postcard.js";

export const TAG_CLIENT_PACK = 0x01;
export const TAG_SERVER_PACK = 0x02;
export const FLAG_DONE = 0x01;
export const FLAG_DEFLATE = 0x02;
export const MAX_INFLATED_BYTES = 64 << 20;

/** A server `pack` frame: the encoded Pack (inflated), its `head` and `done`. */
export interface ServerPackFrame {
  pack: Uint8Array;
  head: U64;
  done: boolean;
}

/** The payload of a binary client `pack` frame (changes without seqs). */
export function clientFrame(changes: readonly Change[]): Uint8Array {
  const pack = encodePack(changes, { seqs: false });
  const out = new Uint8Array(pack.length + 1);
  out[0] = TAG_CLIENT_PACK;
  out.set(pack, 1);
  return out;
}

/** The encoded Pack of a client frame (what the server reads). */
export function parseClientFrame(payload: Uint8Array): Uint8Array {
  if (payload.length === 0) throw new MalformedEnvelope("empty binary frame: expected a tag byte (01 = pack)");
  if (payload[0] !== TAG_CLIENT_PACK) {
    throw new MalformedEnvelope(`unknown binary frame tag ${tagHex(payload[0]!)}: clients send 01 (pack)`);
  }
  return payload.subarray(1);
}

/** A server frame around an encoded (optionally already deflated) Pack. */
export function serverFrame(pack: Uint8Array, head: U64, done = false, deflated = false): Uint8Array {
  const head7: number[] = [];
  let v = BigInt(head);
  while (v >= 0x80n) {
    head7.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  head7.push(Number(v));
  const out = new Uint8Array(1 + head7.length + 1 + pack.length);
  out[0] = TAG_SERVER_PACK;
  out.set(head7, 1);
  out[1 + head7.length] = (done ? FLAG_DONE : 0) | (deflated ? FLAG_DEFLATE : 0);
  out.set(pack, 2 + head7.length);
  return out;
}

/** Parse a binary frame from the server. */
export function parseServerFrame(payload: Uint8Array): ServerPackFrame {
  if (payload.length === 0) throw new MalformedEnvelope("empty binary frame: expected a tag byte (02 = pack)");
  if (payload[0] !== TAG_SERVER_PACK) {
    throw new MalformedEnvelope(`unknown binary frame tag ${tagHex(payload[0]!)}: servers send 02 (pack)`);
  }
  const r = new Reader(payload);
  r.pos = 1;
  let head: U64;
  let flags: number;
  try {
    head = r.u64("head");
    if (r.pos >= payload.length) throw new MalformedEnvelope("binary pack frame ends before its flags byte");
    flags = payload[r.pos]!;
  } catch (exc) {
    if (exc instanceof CodecError) throw new MalformedEnvelope(`binary pack frame header: ${exc.message}`);
    throw exc;
  }
  if (flags & ~(FLAG_DONE | FLAG_DEFLATE)) {
    throw new MalformedEnvelope(`binary pack frame sets reserved flag bits ${tagHex(flags)}`);
  }
  let pack = payload.subarray(r.pos + 1);
  if (flags & FLAG_DEFLATE) pack = inflateRaw(pack, MAX_INFLATED_BYTES);
  return { pack, head, done: (flags & FLAG_DONE) !== 0 };
}

/** Raw DEFLATE → bytes, refusing output past `limit` and truncated or trailing input. */
export function inflateRaw(data: Uint8Array, limit: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  let ended = false;
  let over = false;
  const inflater = new Inflate((chunk, final) => {
    if (over) return;
    total += chunk.length;
    if (total > limit) {
      over = true;
      return;
    }
    chunks.push(chunk);
    if (final) ended = true;
  });
  try {
    // Feed in slices so that a bomb is stopped after at most one slice's expansion.
    const SLICE = 16 * 1024;
    for (let i = 0; i < data.length && !over; i += SLICE) {
      const end = Math.min(i + SLICE, data.length);
      inflater.push(data.subarray(i, end), end === data.length);
    }
    if (data.length === 0) inflater.push(new Uint8Array(0), true);
  } catch (exc) {
    if (over) throw new MalformedEnvelope(`binary pack frame inflates past ${limit} bytes: refused`);
    if (/unexpected EOF/i.test((exc as Error).message)) {
      throw new MalformedEnvelope("binary pack frame: truncated or trailing deflate data");
    }
    throw new MalformedEnvelope(`binary pack frame: bad deflate data (${(exc as Error).message})`);
  }
  if (over) throw new MalformedEnvelope(`binary pack frame inflates past ${limit} bytes: refused`);
  if (!ended) throw new MalformedEnvelope("binary pack frame: truncated or trailing deflate data");
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function tagHex(b: number): string {
  return "0x" + b.toString(16).padStart(2, "0");
}
