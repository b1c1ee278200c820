/**
 * Lifecycle details against a scripted WebSocket peer (a `ws` server that plays given
 * frames, not a roomsync server): what the hello carries, how closes are answered, the
 * overload hint, broken frames, a silent link. The behaviour against the real server is
 * in integration.test.ts.
 */
import { afterEach, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { encodePack, serverFrame, type Change } from "../src/index.js";
import { b64encode } from "../src/bytes.js";
import { Backoff, connect, ConnectionClosed, RoomClient, type RoomOptions } from "../src/index.js";

type Script = (ws: WebSocket, hello: Record<string, unknown>, n: number) => void;

const servers: WebSocketServer[] = [];
const clients: RoomClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => { for (const c of s.clients) c.terminate(); s.close(() => r()); })));
});

async function scripted(script: Script): Promise<{ url: string; hellos: Record<string, unknown>[] }> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  servers.push(wss);
  await new Promise<void>((r) => wss.once("listening", () => r()));
  const hellos: Record<string, unknown>[] = [];
  wss.on("connection", (ws) => {
    ws.once("message", (data) => {
      const hello = JSON.parse(String(data));
      hellos.push(hello);
      script(ws, hello, hellos.length);
    });
  });
  return { url: `http://127.0.0.1:${(wss.address() as { port: number }).port}`, hellos };
}

function welcome(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    type: "welcome", v: 1, session: "s", peer: "p-me", room: "r", caps: ["read", "write", "presence", "reconcile", "binary"],
    head: 0, root: "0".repeat(64), heartbeat_ms: 10_000, limits: {}, presence: [], actor: "me", ...extra,
  });
}

const done = (head: number, changes: Change[] = []): string =>
  JSON.stringify({ type: "pack", data: b64encode(encodePack(changes)), head, done: true });

const fast = new Backoff({ base: 0.02, factor: 2, max: 0.05 });

function client(url: string, extra: Partial<RoomOptions> = {}): Promise<RoomClient> {
  return connect({ url, room: "r", actor: "me", WebSocket: WebSocket as unknown as RoomOptions["WebSocket"], logger: null, backoff: fast, ...extra }).then((c) => {
    clients.push(c);
    return c;
  });
}

async function until(predicate: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

const change = (path: string, seq: number): Change => ({ path, ts: 1700000000000 + seq, counter: 0, actor: "srv", value: new TextEncoder().encode(`"${path}"`), seq });

describe("hello and catch-up", () => {
  it("asks for every granted cap plus binary, and resumes from the cursor after a drop", async () => {
    const { url, hellos } = await scripted((ws, _hello, n) => {
      ws.send(welcome({ head: n === 1 ? 7 : 9 }));
      if (n === 1) {
        ws.send(done(7, [change("/a", 7)]));
        setTimeout(() => ws.terminate(), 50);
      } else {
        ws.send(serverFrame(encodePack([change("/b", 9)]), 9, true));
      }
    });
    const c = await client(url);
    await until(() => hellos.length === 2 && c.status === "synced");
    expect(hellos[0]).toMatchObject({ type: "hello", v: 1, actor: "me", caps: ["*", "binary"], subscribe: ["/"] });
    expect(hellos[0]!.cursor).toBeUndefined();
    expect(hellos[1]!.cursor).toBe(7);
    expect(c.getText("/b")).toBe('"/b"');
    expect(c.cursor).toBe(9);
  });

  it("keeps JSON packs when binary is off", async () => {
    const { url, hellos } = await scripted((ws) => {
      ws.send(welcome({ caps: ["read", "write"] }));
      ws.send(done(0));
    });
    await client(url, { binary: false, caps: ["read", "write"] });
    expect(hellos[0]!.caps).toEqual(["read", "write"]);
  });
});

describe("closes", () => {
  for (const [code, error] of [[4003, "auth"], [4004, "room-closed"], [1002, "malformed-envelope"]] as const) {
    it(`${code} stops at once and surfaces the error`, async () => {
      const { url, hellos } = await scripted((ws) => {
        ws.send(JSON.stringify({ type: "error", code: error, message: `${error}: no` }));
        ws.close(code);
      });
      const err = await client(url).catch((e) => e);
      expect(err).toBeInstanceOf(ConnectionClosed);
      expect(err.closeCode).toBe(code);
      expect(err.code).toBe(error);
      await new Promise((r) => setTimeout(r, 150));
      expect(hellos).toHaveLength(1);
    });
  }

  it("a fatal close mid-session rejects waiters and emits error then close", async () => {
    let sock: WebSocket | null = null;
    const { url } = await scripted((ws) => {
      sock = ws;
      ws.send(welcome());
      ws.send(done(0));
    });
    const c = await client(url);
    const seen: string[] = [];
    c.on("error", (e) => seen.push(`error ${e.code}`));
    c.on("close", (e) => seen.push(`close ${e.closeCode}`));
    c.setText("/x", "1");
    const flushed = c.flush();
    sock!.send(JSON.stringify({ type: "error", code: "room-closed", message: "room 'r' is closed" }));
    sock!.close(4004);
    await expect(flushed).rejects.toMatchObject({ closeCode: 4004 });
    expect(seen).toContain("error room-closed");
    expect(seen[seen.length - 1]).toBe("close 4004");
    expect(c.status).toBe("closed");
    expect(() => c.setText("/y", "2")).toThrow(ConnectionClosed);
  });

  it("overload: waits at least retry_after_ms before the next attempt", async () => {
    const times: number[] = [];
    const { url } = await scripted((ws, _h, n) => {
      times.push(Date.now());
      if (n === 1) {
        ws.send(JSON.stringify({ type: "error", code: "overload", message: "node full", retry_after_ms: 400 }));
        ws.close(1011);
      } else {
        ws.send(welcome());
        ws.send(done(0));
      }
    });
    const c = await client(url);
    expect(times).toHaveLength(2);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(380);
    expect(c.stats.waits[0]).toMatchObject({ closeCode: 1011, errorCode: "overload", retryAfterMs: 400 });
    expect(c.stats.waits[0]!.delayMs).toBeGreaterThanOrEqual(400);
  });

  it("4001: the next hello asks for no catch-up and reconciles through the MST", async () => {
    const { url, hellos } = await scripted((ws, hello, n) => {
      if (n === 1) {
        ws.send(welcome({ head: 3 }));
        ws.send(done(3, [change("/old", 3)]));
        setTimeout(() => {
          ws.send(JSON.stringify({ type: "error", code: "resync-required", message: "behind retention" }));
          ws.close(4001);
        }, 50);
        return;
      }
      ws.send(welcome({ head: 20 }));
      ws.on("message", (data) => {
        const msg = JSON.parse(String(data));
        if (msg.type === "mst-root") ws.send(JSON.stringify({ type: "mst-root", root: "0".repeat(64), count: 0 }));
        if (msg.type === "request") ws.send(done(20)); // the server holds none of them: dropped
      });
      void hello;
    });
    const c = await client(url);
    await until(() => hellos.length === 2 && c.status === "synced" && c.stats.resyncs === 1);
    expect(hellos[1]).toMatchObject({ catchup: false });
    expect(hellos[1]!.cursor).toBeUndefined();
    await until(() => c.get("/old") === undefined);
    expect(c.cursor).toBe(20);
  });
});

describe("broken frames and silent links", () => {
  it("a broken binary frame drops the link; the client resumes", async () => {
    const { url, hellos } = await scripted((ws, _h, n) => {
      ws.send(welcome({ head: 1 }));
      ws.send(done(1, [change("/a", 1)]));
      if (n === 1) setTimeout(() => ws.send(Buffer.from("020004", "hex")), 30); // reserved flag
    });
    const c = await client(url);
    await until(() => hellos.length === 2 && c.status === "synced");
    expect(hellos[1]!.cursor).toBe(1);
  });

  it("drops a link the server is silent on for three heartbeats", async () => {
    const { url, hellos } = await scripted((ws) => {
      ws.send(welcome({ heartbeat_ms: 100 }));
      ws.send(done(0));
      // then nothing: no pong, no frames
    });
    const c = await client(url);
    const t0 = Date.now();
    await until(() => hellos.length === 2, 3000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(c.stats.closes[0]![0]).toBe(1006);
  });

  it("sends presence with the hello's session and again after a reconnect", async () => {
    const presence: unknown[] = [];
    const { url, hellos } = await scripted((ws, _h, n) => {
      ws.on("message", (data) => {
        const msg = JSON.parse(String(data));
        if (msg.type === "presence") presence.push([n, msg.state]);
      });
      ws.send(welcome({ presence: [{ peer: "p-other", actor: "o", state: { name: "o" } }] }));
      ws.send(done(0));
      if (n === 1) setTimeout(() => ws.terminate(), 80);
    });
    const c = await client(url);
    const events: string[] = [];
    c.on("presence", (e) => events.push(`+${e.changed.map((p) => p.peer)} -${e.left}`));
    c.setPresence({ name: "me" });
    await until(() => hellos.length === 2 && presence.length === 2);
    expect(presence).toEqual([[1, { name: "me" }], [2, { name: "me" }]]);
    expect(events).toContain("+ -p-other");
    expect(c.presence.get("p-other")?.state).toEqual({ name: "o" });
  });
});
