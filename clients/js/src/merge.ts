/**
 * The one last-writer-wins rule (SPEC §1) and the hybrid logical clock, as in
 * `roomsync.core.merge` and `roomsync.core.hlc`.
 *
 * `(ts, counter, actor)` orders writes: the greater wins; equal triples are the same
 * write. Actors compare by code point (= UTF-8 bytes), as Python compares `str`. The
 * order is total, so any delivery order of the same changes ends in the same state.
 */

import { compareUtf8 } from "./bytes.js";
import { U32_MAX, type Change, type U64 } from "./postcard.js";

/** -1, 0 or 1: the LWW order of two changes' `(ts, counter, actor)` keys. */
export function compareKeys(a: Change, b: Change): number {
  if (a.ts != b.ts) return a.ts < b.ts ? -1 : 1;
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  const c = compareUtf8(a.actor, b.actor);
  return c < 0 ? -1 : c > 0 ? 1 : 0;
}

/** True when `incoming` must replace `current` (strictly newer key). */
export function wins(incoming: Change, current: Change | null | undefined): boolean {
  return current == null || compareKeys(incoming, current) > 0;
}

/** The same write: equal `(ts, counter, actor)`. */
export function sameKey(a: Change, b: Change): boolean {
  return a.ts == b.ts && a.counter === b.counter && a.actor === b.actor;
}

/** Apply `changes` to `state` in place; return those that won, in input order. */
export function mergeInto(state: Map<string, Change>, changes: Iterable<Change>): Change[] {
  const won: Change[] = [];
  for (const c of changes) {
    if (wins(c, state.get(c.path))) {
      state.set(c.path, c);
      won.push(c);
    }
  }
  return won;
}

/**
 * Hybrid logical clock: `ts` = wall milliseconds, `counter` breaks ties. It never reads
 * time itself (callers pass `nowMs`), and every timestamp it issues is strictly greater
 * than everything it issued or observed, even when the wall clock stalls or goes back.
 */
export class HybridClock {
  constructor(
    public ts: U64 = 0,
    public counter = 0,
  ) {}

  /** The timestamp of a new local write. */
  tick(nowMs: number): [U64, number] {
    if (nowMs > this.ts) {
      this.ts = nowMs;
      this.counter = 0;
    } else if (this.counter < U32_MAX) {
      this.counter += 1;
    } else {
      this.ts = typeof this.ts === "bigint" ? this.ts + 1n : this.ts + 1;
      this.counter = 0;
    }
    return [this.ts, this.counter];
  }

  /** Account for a remote write so that later local writes order after it. */
  observe(ts: U64, counter: number): void {
    if (ts > this.ts || (ts == this.ts && counter > this.counter)) {
      this.ts = ts;
      this.counter = counter;
    }
  }
}
