import { describe, expect, it } from "vitest";
import { compareKeys, HybridClock, mergeInto, wins } from "../src/merge.js";
import type { Change } from "../src/postcard.js";

function c(path: string, ts: number | bigint, counter: number, actor: string, value: string | null = "v"): Change {
  return { path, ts, counter, actor, value: value === null ? null : new TextEncoder().encode(value), seq: null };
}

describe("LWW merge (SPEC §1, roomsync.core.merge)", () => {
  it("orders by ts, then counter, then actor", () => {
    expect(wins(c("/a", 2, 0, "a"), c("/a", 1, 9, "z"))).toBe(true);
    expect(wins(c("/a", 1, 1, "a"), c("/a", 1, 0, "z"))).toBe(true);
    expect(wins(c("/a", 1, 1, "b"), c("/a", 1, 1, "a"))).toBe(true);
    expect(wins(c("/a", 1, 1, "a"), c("/a", 1, 1, "a"))).toBe(false); // the same write
    expect(wins(c("/a", 1, 0, "a"), undefined)).toBe(true);
    expect(compareKeys(c("/a", 10n ** 19n, 0, "a"), c("/a", 2 ** 50, 0, "a"))).toBe(1);
  });

  it("compares actors by code point (UTF-8 bytes), as Python compares str", () => {
    expect(wins(c("/a", 1, 1, "😀"), c("/a", 1, 1, "Ａ"))).toBe(true);
  });

  it("a tombstone wins like any write, and loses like any write", () => {
    const state = new Map<string, Change>();
    mergeInto(state, [c("/a", 1, 0, "a"), c("/a", 2, 0, "b", null)]);
    expect(state.get("/a")!.value).toBeNull();
    mergeInto(state, [c("/a", 3, 0, "a", "back")]);
    expect(new TextDecoder().decode(state.get("/a")!.value!)).toBe("back");
  });

  it("is commutative, associative and idempotent", () => {
    let seed = 5;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    // Every write has its own (ts, counter, actor): equal triples are the same write.
    const changes: Change[] = [];
    const keys = new Set<string>();
    for (let i = 0; i < 400; i++) {
      changes.push(c(`/p/${Math.floor(random() * 30)}`, Math.floor(random() * 5), i % 7, "abc"[Math.floor(random() * 3)]!, random() < 0.3 ? null : `v${i}`));
      const last = changes[changes.length - 1]!;
      const key = `${last.ts}/${last.counter}/${last.actor}`;
      if (keys.has(key)) changes.pop();
      else keys.add(key);
    }
    const digest = (state: Map<string, Change>): string =>
      JSON.stringify([...state.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, e]) => [p, e.ts, e.counter, e.actor, e.value && [...e.value]]));
    const reference = new Map<string, Change>();
    mergeInto(reference, changes);
    for (let round = 0; round < 10; round++) {
      const shuffled = [...changes].sort(() => random() - 0.5);
      const state = new Map<string, Change>();
      mergeInto(state, shuffled.slice(0, 200));
      mergeInto(state, shuffled.slice(150)); // overlap: applied twice
      expect(digest(state)).toBe(digest(reference));
    }
  });
});

describe("HybridClock (roomsync.core.hlc)", () => {
  it("issues strictly increasing stamps even when the wall clock stalls or goes back", () => {
    const clock = new HybridClock();
    const a = clock.tick(1000);
    const b = clock.tick(1000);
    const c2 = clock.tick(900);
    expect(a).toEqual([1000, 0]);
    expect(b).toEqual([1000, 1]);
    expect(c2).toEqual([1000, 2]);
    expect(clock.tick(1001)).toEqual([1001, 0]);
  });

  it("orders local writes after observed remote ones", () => {
    const clock = new HybridClock();
    clock.observe(5000, 7);
    expect(clock.tick(1000)).toEqual([5000, 8]);
    clock.observe(4000, 100); // older: ignored
    expect(clock.tick(1000)).toEqual([5000, 9]);
  });

  it("borrows from the future when the counter is exhausted", () => {
    const clock = new HybridClock(10, 0xffffffff);
    expect(clock.tick(10)).toEqual([11, 0]);
  });
});
