/** Byte helpers: strict standard base64 (SPEC §2), hex, SHA-256, UTF-8 path order. */

import { sha256 as fastSha256 } from "./sha256.js";
import { CodecError } from "./errors.js";

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = new Int16Array(256).fill(-1);
for (let i = 0; i < B64.length; i++) B64_INDEX[B64.charCodeAt(i)] = i;

/** Standard, padded base64 of `data`. */
export function b64encode(data: Uint8Array): string {
  const parts: string[] = [];
  const CHUNK = 0x6000; // multiple of 3
  for (let start = 0; start < data.length; start += CHUNK) {
    const end = Math.min(start + CHUNK, data.length);
    let s = "";
    let i = start;
    for (; i + 2 < end; i += 3) {
      const n = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
      s += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
    }
    if (end - i === 1) {
      const n = data[i]! << 16;
      s += B64[n >> 18]! + B64[(n >> 12) & 63]! + "==";
    } else if (end - i === 2) {
      const n = (data[i]! << 16) | (data[i + 1]! << 8);
      s += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + "=";
    }
    parts.push(s);
  }
  return parts.join("");
}

/**
 * Decode standard, padded base64 strictly (what the server accepts and sends):
 * {@link CodecError} `bad base64 in <what>` otherwise (unpadded or URL-safe text included).
 */
export function b64decode(text: unknown, what = "data"): Uint8Array {
  if (typeof text !== "string") throw new CodecError(`bad base64: ${what} must be a string`);
  const n = text.length;
  if (n % 4 !== 0) throw new CodecError(`bad base64 in ${what}`);
  let pad = 0;
  if (n > 0 && text.charCodeAt(n - 1) === 61) pad = text.charCodeAt(n - 2) === 61 ? 2 : 1;
  const out = new Uint8Array((n / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < n; i += 4) {
    const last = i + 4 === n;
    const a = B64_INDEX[text.charCodeAt(i)]!;
    const b = B64_INDEX[text.charCodeAt(i + 1)]!;
    const c = last && pad === 2 ? 0 : B64_INDEX[text.charCodeAt(i + 2)]!;
    const d = last && pad >= 1 ? 0 : B64_INDEX[text.charCodeAt(i + 3)]!;
    if ((a | b | c | d) < 0) throw new CodecError(`bad base64 in ${what}`);
    const v = (a << 18) | (b << 12) | (c << 6) | d;
    out[o++] = v >> 16;
    if (o < out.length) out[o++] = (v >> 8) & 0xff;
    if (o < out.length) out[o++] = v & 0xff;
  }
  return out;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function toHex(data: Uint8Array): string {
  let s = "";
  for (let i = 0; i < data.length; i++) s += HEX[data[i]!]!;
  return s;
}

export function fromHex(text: string): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new CodecError(`bad postcard: ${JSON.stringify(text.slice(0, 80))} is not a hex hash`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** SHA-256 (synchronous: the MST hashes on every read of a root; see sha256.ts). */
export function sha256(data: Uint8Array): Uint8Array {
  return fastSha256(data);
}

export function bytesEqual(a: Uint8Array | null | undefined, b: Uint8Array | null | undefined): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Compare two strings in the order of their UTF-8 bytes (= code point order), which is
 * the order SPEC §1 sorts paths in. JavaScript's `<` compares UTF-16 code units and puts
 * astral characters (surrogates, 0xD800–0xDFFF) before U+E000–U+FFFF: fixed up here.
 */
export function compareUtf8(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800 && y >= 0xd800) {
        const xs = x <= 0xdfff;
        const ys = y <= 0xdfff;
        if (xs !== ys) return xs ? 1 : -1;
      }
      return x < y ? -1 : 1;
    }
  }
  return a.length - b.length;
}

const ASTRAL_OR_HIGH = /[\ud800-\uffff]/;

/** Sort paths by UTF-8 bytes, in place; the fast native sort when no path needs the fix-up. */
export function sortUtf8(paths: string[]): string[] {
  if (paths.some((p) => ASTRAL_OR_HIGH.test(p))) return paths.sort(compareUtf8);
  return paths.sort();
}

/**
 * Whether `v` is a Uint8Array, from this realm or another (an iframe, a worker's
 * message, a test DOM whose globals differ from the engine's): `instanceof` alone
 * refuses the others.
 */
export function isBytes(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array || (ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === "[object Uint8Array]");
}

/** Whether `v` is an ArrayBuffer of any realm. */
export function isArrayBuffer(v: unknown): v is ArrayBuffer {
  return v instanceof ArrayBuffer || Object.prototype.toString.call(v) === "[object ArrayBuffer]";
}
