/**
 * The client against the real Python server (`roomsync serve --dev` on a free port): two
 * JS clients converge on writes and deletes with the server's canonical root, survive a
 * server restart (offline → synced, no lost edits), resync after 4001, refresh an expired
 * token (4002) and stop on a fatal close (4003). No mocks: real sockets, real server.
 */
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { connect, ConnectionClosed, type RoomClient, type RoomOptions, type Status } from "../src/index.js";
import { TestServer, until } from "./server.js";

let server: TestServer;
const clients: RoomClient[] = [];

beforeAll(async () => {
  server = await TestServer.create();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.dispose();
});

async function join(room: string, extra: Partial<RoomOptions> = {}): Promise<RoomClient> {
  const client = await connect({
    url: server.url,
    room,
    WebSocket: WebSocket as unknown as RoomOptions["WebSocket"],
    logger: null,
    backoff: undefined,
    ...extra,
  });
  clients.push(client);
  return client;
}

describe("two JS clients against the real server", () => {
  it("negotiate binary packs and converge on concurrent writes and deletes", async () => {
    const a = await join("converge");
    const b = await join("converge");
    expect(a.caps).toContain("binary");
    await Promise.all([a.waitSynced(5000), b.waitSynced(5000)]);
    const remoteAtB: string[] = [];
    b.on("change", (e) => {
      if (!e.local) remoteAtB.push(e.path);
    });
    for (let i = 0; i < 200; i++) a.setJSON(`/notes/${i}`, { by: "a", i });
    for (let i = 100; i < 300; i++) b.setJSON(`/notes/${i}`, { by: "b", i });
    a.delete("/notes/3");
    b.delete("/notes/250");
    await Promise.all([a.flush(5000), b.flush(5000)]);
    const serverRoot = await a.serverRoot();
    await until(() => a.root === serverRoot && b.root === serverRoot, 5000, "equal roots");
    expect(a.size).toBe(298);
    expect(b.getJSON("/notes/0")).toEqual({ by: "a", i: 0 });
    expect(a.get("/notes/3")).toBeUndefined();
    expect(b.get("/notes/3")).toBeUndefined();
    expect(remoteAtB).toContain("/notes/0");
    // An overlapping path holds one winner on both sides (LWW by ts, counter, actor).
    expect(a.getJSON("/notes/150")).toEqual(b.getJSON("/notes/150"));
  });

  it("a late joiner gets the full state and the same root", async () => {
    const a = await join("late");
    for (let i = 0; i < 2000; i++) a.setText(`/items/${i}`, `value ${i}`);
    a.delete("/items/7");
    await a.flush(10_000);
    const c = await join("late");
    await c.waitSynced(10_000);
    expect(c.size).toBe(1999);
    expect(c.root).toBe(a.root);
    expect(c.root).toBe(await c.serverRoot());
    expect(c.stats.lastCatchupChanges).toBeGreaterThanOrEqual(1999);
  });

  it("JSON packs still work when binary is turned off", async () => {
    const a = await join("json", { binary: false });
    const b = await join("json");
    expect(a.caps).not.toContain("binary");
    a.setJSON("/j", { ok: true });
    await a.flush(5000);
    await until(() => b.getJSON("/j") !== undefined, 5000, "b sees /j");
    expect(b.getJSON("/j")).toEqual({ ok: true });
  });

  it("subscriptions by prefix: only the subscribed state, then what a new prefix adds", async () => {
    const writer = await join("prefixes");
    for (let i = 0; i < 20; i++) {
      writer.setText(`/a/${i}`, `a${i}`);
      writer.setText(`/b/${i}`, `b${i}`);
    }
    await writer.flush(5000);
    const reader = await join("prefixes", { subscribe: ["/a"] });
    await reader.waitSynced(5000);
    expect(reader.entries("/").map(([p]) => p.split("/")[1])).toEqual(Array(20).fill("a"));
    const watched: string[] = [];
    reader.watch("/b", (e) => watched.push(e.path));
    writer.setText("/b/new", "ignored until subscribed");
    writer.setText("/a/new", "seen");
    await writer.flush(5000);
    await until(() => reader.get("/a/new") !== undefined, 5000, "/a/new");
    expect(reader.get("/b/new")).toBeUndefined();
    await reader.subscribe(["/a", "/b"]);
    expect(reader.size).toBe(42);
    expect(reader.getText("/b/new")).toBe("ignored until subscribed");
    expect(watched).toContain("/b/new");
    expect(watched.every((p) => p.startsWith("/b/"))).toBe(true);
  });

  it("presence: set, seen by the other, restored after a reconnect", async () => {
    const a = await join("presence");
    const b = await join("presence");
    a.setPresence({ name: "ada", cursor: [1, 2] });
    await until(() => [...b.presence.values()].some((p) => (p.state as { name?: string })?.name === "ada"), 5000, "presence at b");
    a.disconnect();
    await until(() => a.status === "synced" && a.stats.welcomes >= 2, 10_000, "a reconnected");
    await until(() => [...b.presence.values()].some((p) => (p.state as { name?: string })?.name === "ada"), 5000, "presence restored");
    a.clearPresence();
    await until(() => b.presence.size === 0, 5000, "presence cleared");
  });

  it("blobs: putBlob and getBlob verify the bytes", async () => {
    const a = await join("blobs");
    const b = await join("blobs");
    const seen: string[] = [];
    b.on("blob-available", (info) => seen.push(info.hash));
    const data = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
    const hash = await a.putBlob(data, 10_000);
    expect(hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    const back = await b.getBlob(hash, 10_000);
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
    await until(() => seen.includes(hash), 5000, "blob-available");
    await expect(b.getBlob("sha256:" + "0".repeat(64), 5000)).rejects.toMatchObject({ code: "not-found" });
  });
});

describe("lifecycle against the real server", () => {
  it("reconnects after a server restart without losing edits written while offline", async () => {
    const a = await join("restart");
    const b = await join("restart");
    const statuses: Status[] = [];
    a.on("status", (s) => statuses.push(s));
    a.setText("/before", "1");
    await a.flush(5000);
    await server.stop();
    await until(() => a.status === "offline" || a.status === "connecting", 10_000, "a offline");
    a.setText("/offline", "written while the server was down");
    b.delete("/before");
    await server.start();
    await Promise.all([a.flush(20_000), b.flush(20_000)]);
    await until(() => a.status === "synced" && b.status === "synced", 20_000, "both synced");
    const serverRoot = await a.serverRoot();
    await until(() => a.root === serverRoot && b.root === serverRoot, 10_000, "equal roots after restart");
    expect(b.getText("/offline")).toBe("written while the server was down");
    expect(a.get("/before")).toBeUndefined();
    expect(statuses).toContain("offline");
    expect(statuses[statuses.length - 1]).toBe("synced");
  }, 60_000);

  it("4001 (cursor ahead of the room): full resync by MST reconcile", async () => {
    const a = await join("resync");
    for (let i = 0; i < 50; i++) a.setText(`/r/${i}`, String(i));
    await a.flush(5000);
    expect(a.cursor).toBeGreaterThan(0);
    // A new, empty data dir: the room's head is 0, behind the client's cursor.
    await server.stop();
    const fresh = `${server.dataDir}-fresh`;
    await server.start(fresh);
    const other = await join("resync");
    other.setText("/r/new", "from the new room");
    await other.flush(5000);
    await until(() => a.stats.resyncs >= 1 && a.status === "synced", 20_000, "a resynced");
    expect(a.stats.closes.some(([code]) => code === 4001)).toBe(true);
    expect(a.stats.reconciles).toBeGreaterThanOrEqual(1);
    const serverRoot = await a.serverRoot();
    await until(() => a.root === serverRoot, 10_000, "a at the server root");
    // The server is the authority: entries it no longer has are dropped, not resurrected.
    expect(a.get("/r/1")).toBeUndefined();
    expect(a.getText("/r/new")).toBe("from the new room");
    await server.stop();
    rmSync(fresh, { recursive: true, force: true });
    await server.start();
  }, 60_000);

  it("4001 after an archive restore: the batched MST reconcile brings the replica to the archive", async () => {
    const sent: string[] = [];
    class Recording extends WebSocket {
      override send(data: unknown, ...rest: unknown[]): void {
        sent.push(typeof data === "string" ? (JSON.parse(data).type as string) : "binary-pack");
        (super.send as (...a: unknown[]) => void)(data, ...rest);
      }
    }
    const a = await join("restore", { WebSocket: Recording as unknown as RoomOptions["WebSocket"] });
    for (let i = 0; i < 500; i++) a.setText(`/doc/${i}`, `v${i}`);
    await a.flush(10_000);
    const operator = server.mint({ caps: "archive:*", ttl: "1h" });
    const control = async (command: string, body: unknown): Promise<Record<string, unknown>> => {
      const resp = await fetch(`${server.url}/v1/control/archive/${command}`, {
        method: "POST",
        headers: { authorization: `Bearer ${operator}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const out = (await resp.json()) as { ok: boolean; result: Record<string, unknown> };
      expect(out.ok).toBe(true);
      return out.result;
    };
    const archive = await control("create", { room: "restore" });
    for (let i = 0; i < 10; i++) a.setText(`/doc/${i}`, `changed ${i}`);
    for (let i = 0; i < 10; i++) a.setText(`/extra/${i}`, "new");
    for (let i = 100; i < 105; i++) a.delete(`/doc/${i}`);
    await a.flush(10_000);
    expect(a.root).not.toBe(archive.root);
    sent.length = 0;
    const restored = await control("restore", { room: "restore", ref: archive.ref });
    await until(() => a.stats.closes.some(([code]) => code === 4001) && a.status === "synced", 20_000, "resync after restore");
    await until(() => a.root === restored.root, 10_000, "the archive's root");
    expect(a.size).toBe(500);
    expect(a.getText("/doc/3")).toBe("v3");
    expect(a.get("/extra/1")).toBeUndefined();
    expect(a.getText("/doc/101")).toBe("v101");
    expect(sent).toContain("mst-probe");
    expect(sent).not.toContain("mst-get"); // the batched walk found everything
    expect(a.root).toBe(await a.serverRoot());
  }, 60_000);

  it("4002 (token expired): asks the token provider and reconnects", async () => {
    let minted = 0;
    const provider = (): string => {
      minted++;
      return server.mint({ ttl: minted === 1 ? "2" : "1h" });
    };
    const a = await join("expiry", { tokenProvider: provider });
    a.setText("/t", "one");
    await a.flush(5000);
    await until(() => a.stats.closes.some(([code]) => code === 4002), 15_000, "close 4002");
    await until(() => a.status === "synced" && minted >= 2, 15_000, "reconnected with a fresh token");
    a.setText("/t", "two");
    await a.flush(5000);
    expect(a.status).toBe("synced");
  }, 40_000);

  it("4003 (bad token): stops at once and surfaces the error", async () => {
    const attempt = connect({
      url: server.url,
      room: "forbidden",
      token: "not.a.token",
      WebSocket: WebSocket as unknown as RoomOptions["WebSocket"],
      logger: null,
    });
    await expect(attempt).rejects.toBeInstanceOf(ConnectionClosed);
    const err = (await attempt.catch((e) => e)) as ConnectionClosed;
    expect(err.closeCode).toBe(4003);
    expect(err.code).toBe("auth");
  });
});
