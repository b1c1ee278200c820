// @vitest-environment jsdom
/**
 * roomsync-client/react against the real Python server (`roomsync serve --dev`): the hooks
 * render the replica, re-render on remote changes and presence, write through useSet, and
 * a component re-renders only for the data it reads. The WebSocket is jsdom's (the
 * browser API), not the `ws` package's.
 */
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";
import { createElement as h, StrictMode, useRef } from "react";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect, RoomClient } from "../src/index.js";
import { RoomProvider, useEntries, useOthers, usePresence, useRoom, useSet, useStatus, useValue } from "../src/react.js";
import { TestServer, until } from "./server.js";

let server: TestServer;
const clients: RoomClient[] = [];
let roomN = 0;

beforeAll(async () => {
  server = await TestServer.create();
});
afterAll(async () => {
  await server?.dispose();
});
afterEach(async () => {
  cleanup();
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

function roomName(): string {
  return `react-${process.pid}-${++roomN}`;
}

async function peer(room: string, actor: string): Promise<RoomClient> {
  const c = await connect({ url: server.url, room, actor, logger: null });
  clients.push(c);
  await c.waitSynced();
  return c;
}

const text = (id: string): string => screen.getByTestId(id).textContent ?? "";

function Board(): ReturnType<typeof h> {
  const status = useStatus();
  const title = useValue<string>("/title");
  const notes = useEntries<{ text: string }>("/notes");
  const set = useSet();
  const [me, updateMe] = usePresence<{ name: string; x?: number }>();
  const others = useOthers<{ name: string }>();
  return h(
    "div",
    null,
    h("span", { "data-testid": "status" }, status),
    h("span", { "data-testid": "title" }, title ?? "-"),
    h("span", { "data-testid": "notes" }, notes.map(([p, v]) => `${p}=${v.text}`).join(",")),
    h("span", { "data-testid": "me" }, me === null ? "-" : `${me.name}@${me.x ?? ""}`),
    h("span", { "data-testid": "others" }, others.map((o) => o.state.name).sort().join(",")),
    h("button", { "data-testid": "add", onClick: () => set("/notes/2", { text: "from react" }) }),
    h("button", { "data-testid": "del", onClick: () => set("/notes/1", undefined) }),
    h("button", { "data-testid": "join", onClick: () => updateMe({ name: "ada", x: 1 }) }),
    h("button", { "data-testid": "move", onClick: () => updateMe({ x: 2 }) }),
  );
}

describe("roomsync-client/react", () => {
  it("renders the room, follows remote writes and presence, writes through useSet", async () => {
    const room = roomName();
    const other = await peer(room, "bob");
    other.setJSON("/title", "hello");
    other.setJSON("/notes/1", { text: "first" });
    await other.flush();
    other.setPresence({ name: "bob" });

    render(h(StrictMode, null, h(RoomProvider, { url: server.url, room, actor: "ada", logger: null }, h(Board))));
    expect(text("status")).toBe("connecting");
    await waitFor(() => expect(text("status")).toBe("synced"), { timeout: 10_000 });
    expect(text("title")).toBe("hello");
    expect(text("notes")).toBe("/notes/1=first");
    await waitFor(() => expect(text("others")).toBe("bob"), { timeout: 10_000 });

    other.setJSON("/title", "changed");
    await waitFor(() => expect(text("title")).toBe("changed"), { timeout: 10_000 });

    act(() => screen.getByTestId("add").click());
    expect(text("notes")).toBe("/notes/1=first,/notes/2=from react"); // local at once
    await until(() => other.getJSON<{ text: string }>("/notes/2")?.text === "from react", 10_000, "write at the other peer");
    act(() => screen.getByTestId("del").click());
    expect(text("notes")).toBe("/notes/2=from react");
    await until(() => other.get("/notes/1") === undefined, 10_000, "delete at the other peer");

    act(() => screen.getByTestId("join").click());
    act(() => screen.getByTestId("move").click());
    expect(text("me")).toBe("ada@2"); // the patch merged into the state
    await until(() => [...other.presence.values()].some((p) => JSON.stringify(p.state) === '{"name":"ada","x":2}'), 10_000, "ada's presence at bob");

    other.clearPresence();
    await waitFor(() => expect(text("others")).toBe(""), { timeout: 10_000 });
  });

  it("re-renders a component only for the path it reads", async () => {
    const room = roomName();
    const other = await peer(room, "bob");
    const client = await peer(room, "ada");
    const renders = { a: 0, b: 0 };
    function One({ path, name }: { path: string; name: "a" | "b" }): ReturnType<typeof h> {
      const value = useValue<number>(path);
      renders[name] += 1;
      return h("span", { "data-testid": name }, String(value ?? "-"));
    }
    render(h(RoomProvider, { client }, h(One, { path: "/a", name: "a" }), h(One, { path: "/b", name: "b" })));
    const before = { ...renders };
    other.setJSON("/b", 1);
    await waitFor(() => expect(text("b")).toBe("1"), { timeout: 10_000 });
    other.setJSON("/b", 2);
    await waitFor(() => expect(text("b")).toBe("2"), { timeout: 10_000 });
    expect(renders.a).toBe(before.a);
    expect(renders.b).toBeGreaterThan(before.b);
    expect(text("a")).toBe("-");
  });

  it("closes the client it created on unmount, never one it was given", async () => {
    const room = roomName();
    const given = await peer(room, "given");
    let seen: RoomClient | null = null;
    function Grab(): null {
      const ref = useRef<RoomClient | null>(null);
      ref.current = useRoom();
      seen = ref.current;
      return null;
    }
    const first = render(h(RoomProvider, { client: given }, h(Grab)));
    expect(seen).toBe(given);
    first.unmount();
    expect(given.status).toBe("synced");

    const owned = render(h(RoomProvider, { url: server.url, room, actor: "owned", logger: null }, h(Grab)));
    await waitFor(() => expect(seen !== null && seen !== given && seen.status === "synced").toBe(true), { timeout: 10_000 });
    const client = seen as unknown as RoomClient;
    owned.unmount();
    await until(() => client.status === "closed", 5_000, "owned client closed");
  });

  it("shows an empty room outside a provider", () => {
    render(h(Board));
    expect(text("status")).toBe("connecting");
    expect(text("notes")).toBe("");
    expect(text("others")).toBe("");
    let set: ((path: string, value: unknown) => void) | null = null;
    function Grab(): null {
      set = useSet();
      return null;
    }
    render(h(Grab));
    expect(() => set!("/x", 1)).toThrow(/outside a connected RoomProvider/);
  });
});
