import { describe, expect, it } from "vitest";
import { Replica } from "../src/replica.js";
import type { Change } from "../src/postcard.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (c: Change | undefined): string | undefined => (c?.value ? new TextDecoder().decode(c.value) : undefined);

function server(path: string, ts: number, value: string | null, seq: number, actor = "srv"): Change {
  return { path, ts, counter: 0, actor, value: value === null ? null : enc(value), seq };
}

describe("Replica (roomsync.core.replica)", () => {
  it("keeps one unsent write per path in the offline queue, newest last", () => {
    const r = new Replica("me");
    r.write("/a", enc("1"), 1000);
    r.write("/b", enc("2"), 1000);
    r.write("/a", enc("3"), 1000);
    expect(r.unsent.map((c) => [c.path, dec(c)])).toEqual([["/b", "2"], ["/a", "3"]]);
    expect(r.pending).toBe(2);
    expect(r.idle).toBe(false);
  });

  it("acks settle packs FIFO and move the cursor; a refused write rolls back", () => {
    const r = new Replica("me");
    r.startSession(false);
    r.onWelcome(10);
    r.receive([server("/x", 1, "server", 10)], 10, true);
    expect(r.synced).toBe(true);
    r.write("/x", enc("mine"), 2000);
    r.write("/y", enc("new"), 2000);
    const pack = r.takeOutgoing(100, 1 << 20)!;
    expect(pack).toHaveLength(2);
    const settled = r.onAck([null, 12], [{ index: 0, code: "too-large", message: "big" }]);
    expect(settled.refused.map((x) => x.code)).toEqual(["too-large"]);
    expect(dec(r.get("/x"))).toBe("server"); // rolled back to the confirmed entry
    expect(dec(r.get("/y"))).toBe("new");
    expect(r.cursor).toBe(12);
    expect(r.idle).toBe(true);
  });

  it("a rate-limited pack goes back to the front of the queue", () => {
    const r = new Replica("me");
    r.write("/a", enc("1"), 1000);
    r.takeOutgoing(100, 1 << 20);
    r.write("/b", enc("2"), 1000);
    const s = r.onAck([], [{ index: -1, code: "rate-limited" }]);
    expect(s.retry).toBe(true);
    expect(r.unsent.map((c) => c.path)).toEqual(["/a", "/b"]);
  });

  it("a change refused with retry_after_ms (a failed commit) is sent again, not rolled back", () => {
    const r = new Replica("me");
    r.write("/a", enc("1"), 1000);
    r.write("/b", enc("2"), 1000);
    r.takeOutgoing(100, 1 << 20);
    const s = r.onAck([5, null], [{ index: 1, code: "internal", message: "the store failed", retry_after_ms: 1000 }]);
    expect(s.refused).toEqual([]);
    expect(s.retry).toBe(true);
    expect(dec(r.get("/b"))).toBe("2"); // still the local value
    expect(r.unsent.map((c) => c.path)).toEqual(["/b"]);
    const whole = new Replica("me");
    whole.write("/c", enc("3"), 1000);
    whole.takeOutgoing(100, 1 << 20);
    const w = whole.onAck([], [{ index: -1, code: "internal", message: "x", retry_after_ms: 500 }]);
    expect(w.retry).toBe(true);
    expect(whole.unsent.map((c) => c.path)).toEqual(["/c"]);
  });

  it("after a disconnect, packs in flight are queued again", () => {
    const r = new Replica("me");
    r.write("/a", enc("1"), 1000);
    r.takeOutgoing(100, 1 << 20);
    r.requeueInflight();
    expect(r.unsent.map((c) => c.path)).toEqual(["/a"]);
  });

  it("a superseded write rolls back and waits for the winner", () => {
    const r = new Replica("me");
    r.startSession(false);
    r.onWelcome(5);
    r.receive([], 5, true);
    r.write("/w", enc("late"), 1000);
    r.takeOutgoing(100, 1 << 20);
    const s = r.onAck([9], [], [{ index: 0, seq: 9 }]);
    expect(s.superseded).toHaveLength(1);
    expect(r.get("/w")).toBeUndefined();
    expect(r.fetchPaths()).toEqual(["/w"]);
    expect(r.idle).toBe(false);
    r.expectPaths(["/w"]);
    r.receive([server("/w", 5000, "winner", 9)], null, true);
    expect(dec(r.get("/w"))).toBe("winner");
    expect(r.idle).toBe(true);
    // The clock moved past the winner: the next local write of the path wins.
    const again = r.write("/w", enc("again"), 1000);
    expect(again.ts).toBe(5000);
    expect(again.counter).toBeGreaterThan(0);
  });

  it("a full catch-up is authoritative: confirmed entries the server lacks are dropped", () => {
    const r = new Replica("me");
    r.startSession(false);
    r.onWelcome(3);
    r.receive([server("/keep", 1, "k", 1), server("/gone", 1, "g", 2)], 3, true);
    r.resyncRequired();
    const plan = r.startSession(false);
    expect(plan).toMatchObject({ mode: "full", cursor: null, catchup: true });
    r.write("/mine", enc("unsent"), 10);
    r.onWelcome(4);
    const got = r.receive([server("/keep", 1, "k", 1)], 4, true);
    expect(r.get("/gone")).toBeUndefined();
    expect(got.changed.map((c) => [c.path, c.value])).toContainEqual(["/gone", null]);
    expect(dec(r.get("/mine"))).toBe("unsent"); // unacknowledged writes are pushed, not dropped
    expect(r.cursor).toBe(4);
  });

  it("plans an MST resync after 4001 when the whole room is subscribed", () => {
    const r = new Replica("me");
    r.resyncRequired();
    expect(r.startSession(true)).toMatchObject({ mode: "reconcile", catchup: false, cursor: null });
    r.onWelcome(42);
    r.finishResync();
    expect(r.cursor).toBe(42);
    const sub = new Replica("me", { subscribe: ["/a"] });
    sub.resyncRequired();
    expect(sub.startSession(true).mode).toBe("full");
  });
});
