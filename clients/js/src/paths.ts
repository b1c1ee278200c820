/** Path and prefix rules (SPEC §1), as `roomsync.core.types`. */

import { utf8ByteLength } from "./postcard.js";

export const MAX_PATH_BYTES = 1024;

/** Why `path` is not a valid state path, or null. */
export function pathError(path: unknown): string | null {
  if (typeof path !== "string") return "path must be a string";
  if (!path.startsWith("/")) return "path must start with '/'";
  if (utf8ByteLength(path) > MAX_PATH_BYTES) return `path longer than ${MAX_PATH_BYTES} bytes`;
  if (path === "/" || path.includes("//") || path.endsWith("/")) return "path has an empty segment";
  if (!wellFormed(path)) return "path is not valid UTF-8";
  return null;
}

export class InvalidPath extends Error {
  code = "invalid-path";
}

export function validatePath(path: unknown): string {
  const why = pathError(path);
  if (why !== null) throw new InvalidPath(`invalid path ${JSON.stringify(path)}: ${why}`);
  return path as string;
}

/** A subscription prefix: `/` or a valid path (it matches itself and everything below). */
export function validatePrefix(prefix: string): string {
  if (prefix === "/") return "/";
  if (prefix.endsWith("/") && prefix.length > 1) prefix = prefix.slice(0, -1);
  const why = pathError(prefix);
  if (why !== null) throw new InvalidPath(`invalid subscription prefix ${JSON.stringify(prefix)}: ${why}`);
  return prefix;
}

/** True when `path` is `prefix` itself or lies below it (segment-wise). */
export function prefixMatches(prefix: string, path: string): boolean {
  if (prefix === "/") return true;
  return path === prefix || (path.startsWith(prefix) && path[prefix.length] === "/");
}

export function anyPrefixMatches(prefixes: readonly string[], path: string): boolean {
  for (const p of prefixes) if (prefixMatches(p, path)) return true;
  return false;
}

/** True when `actor` may write for a session whose token names `bound` (SPEC §3). */
export function actorAllowed(bound: string, actor: string): boolean {
  return actor === bound || (actor.startsWith(bound) && actor[bound.length] === "#");
}

/** The actor to write as: `wanted`/`fallback` without a token `sub`, else `sub` or `sub#…`. */
export function sessionActor(sub: string | null, wanted: string | null, fallback: string): string {
  if (!sub) return wanted || fallback;
  if (wanted && actorAllowed(sub, wanted)) return wanted;
  return `${sub}#${wanted || fallback}`;
}

function wellFormed(text: string): boolean {
  try {
    encodeURIComponent(text); // throws URIError on a lone surrogate
    return true;
  } catch {
    return false;
  }
}
