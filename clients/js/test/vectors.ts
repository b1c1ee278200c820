/** Reads the golden vectors of the repository (vectors/*.json): one source for both suites. */
import { readFileSync } from "node:fs";
import { fromHex } from "../src/bytes.js";
import type { Change } from "../src/postcard.js";

export const VECTORS_DIR = new URL("../../../vectors/", import.meta.url);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function loadVectors(name: string): any {
  // JSON numbers past 2^53 lose precision in JSON.parse: keep long integers as bigints.
  const text = readFileSync(new URL(name, VECTORS_DIR), "utf8").replace(
    /([:\[,]\s*)(\d{16,})(?=\s*[,\]}])/g,
    '$1"__big__:$2"',
  );
  return JSON.parse(text, (_key, value) => {
    if (typeof value === "string" && value.startsWith("__big__:")) {
      const big = BigInt(value.slice(8));
      return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    }
    return value;
  });
}

export interface ChangeJson {
  path: string;
  ts: number | bigint;
  counter: number;
  actor: string;
  op: { Set: string } | { Delete: null };
  seq: number | bigint | null;
}

export function changeFromJson(c: ChangeJson): Change {
  return {
    path: c.path,
    ts: c.ts,
    counter: c.counter,
    actor: c.actor,
    value: "Set" in c.op ? fromHex(c.op.Set) : null,
    seq: c.seq,
  };
}

export function changeToJson(c: Change): unknown {
  return {
    path: c.path,
    ts: c.ts,
    counter: c.counter,
    actor: c.actor,
    op: c.value === null ? { Delete: null } : { Set: Buffer.from(c.value).toString("hex") },
    seq: c.seq,
  };
}
