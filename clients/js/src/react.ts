/**
 * roomsync-client/react: React bindings over {@link RoomClient}, in the ecosystem's style
 * (one provider, small hooks, `useSyncExternalStore` for tear-free reads).
 *
 * ```tsx
 * <RoomProvider url="http://127.0.0.1:8787" room="board-1">
 *   <Board />
 * </RoomProvider>
 *
 * function Board() {
 *   const notes = useEntries("/notes/");          // [path, value][] (JSON decoded)
 *   const set = useSet();                          // set(path, value); set(path, undefined) deletes
 *   const [me, updateMe] = usePresence();          // my presence state + a merging updater
 *   const others = useOthers();                    // the other peers' presence
 *   const status = useStatus();                    // connecting | open | synced | offline | closed
 * }
 * ```
 *
 * Every hook reads the local replica synchronously; a snapshot object changes identity only
 * when what it shows changed, so components re-render for their own data only.
 */

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import { isBytes } from "./bytes.js";
import { RoomClient, type PresenceInfo, type RoomOptions, type Status } from "./client.js";

const decoder = new TextDecoder();

/** A JSON value as the hooks return it; a value that is not JSON comes back as its bytes. */
export type Value = unknown;

/** Decode a stored value: JSON when it parses, else the raw bytes. */
export function decodeValue(bytes: Uint8Array): Value {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    return bytes;
  }
}

type Listener = () => void;

/**
 * The subscriptions the hooks share for one client: cached snapshots per path, per
 * prefix, for the presence of the others and of this peer, and the status. One store per
 * client (a WeakMap), so several providers of the same client agree.
 */
class RoomStore {
  private values = new Map<string, { bytes: Uint8Array | undefined; value: Value }>();
  private entryCache = new Map<string, { version: number; rows: [string, Value][] }>();
  private prefixVersion = new Map<string, number>();
  private othersCache: PresenceInfo[] | null = null;
  private selfListeners = new Set<Listener>();

  constructor(readonly client: RoomClient) {}

  subscribePath = (path: string, cb: Listener): (() => void) =>
    this.client.watch(path, (event) => {
      if (event.path === path) cb();
    });

  value(path: string): Value {
    const bytes = this.client.get(path);
    const cached = this.values.get(path);
    if (cached !== undefined && cached.bytes === bytes) return cached.value;
    const value = bytes === undefined ? undefined : decodeValue(bytes);
    this.values.set(path, { bytes, value });
    return value;
  }

  subscribePrefix = (prefix: string, cb: Listener): (() => void) =>
    this.client.watch(prefix, () => {
      this.prefixVersion.set(prefix, (this.prefixVersion.get(prefix) ?? 0) + 1);
      cb();
    });

  entries(prefix: string): [string, Value][] {
    const version = this.prefixVersion.get(prefix) ?? 0;
    const cached = this.entryCache.get(prefix);
    if (cached !== undefined && cached.version === version) return cached.rows;
    const rows = this.client.entries(prefix).map(([p, v]): [string, Value] => {
      const old = this.values.get(p);
      return [p, old !== undefined && old.bytes === v ? old.value : decodeValue(v)];
    });
    this.entryCache.set(prefix, { version, rows });
    return rows;
  }

  subscribeOthers = (cb: Listener): (() => void) =>
    this.client.on("presence", () => {
      this.othersCache = null;
      cb();
    });

  others(): PresenceInfo[] {
    if (this.othersCache === null) this.othersCache = [...this.client.presence.values()];
    return this.othersCache;
  }

  subscribeSelf = (cb: Listener): (() => void) => {
    this.selfListeners.add(cb);
    return () => this.selfListeners.delete(cb);
  };

  self(): unknown {
    return this.client.localPresence;
  }

  setSelf(state: unknown): void {
    this.client.setPresence(state);
    for (const cb of [...this.selfListeners]) cb();
  }

  subscribeStatus = (cb: Listener): (() => void) => this.client.on("status", () => cb());
}

const stores = new WeakMap<RoomClient, RoomStore>();

function storeOf(client: RoomClient): RoomStore {
  let store = stores.get(client);
  if (store === undefined) stores.set(client, (store = new RoomStore(client)));
  return store;
}

const RoomContext = createContext<RoomClient | null>(null);

/** Props of {@link RoomProvider}: an existing `client`, or the options to create one. */
export type RoomProviderProps =
  | { client: RoomClient; children?: ReactNode }
  | (RoomOptions & { client?: undefined; children?: ReactNode });

/**
 * Give the hooks below it a room. With `client`, the app owns it (the provider never
 * closes it). With options (`url`, `room`, `token`, …), the provider creates the client
 * on mount, starts it, and closes it on unmount or when `url`/`room`/`token` change.
 * Until the client exists, the hooks show an empty room with status `connecting`.
 */
export function RoomProvider(props: RoomProviderProps): ReactNode {
  const given = props.client;
  const [owned, setOwned] = useState<RoomClient | null>(null);
  const options = given === undefined ? (props as RoomOptions) : null;
  const key = options === null ? null : `${options.url}\u0000${options.room}\u0000${options.token ?? ""}`;
  useEffect(() => {
    if (options === null) return;
    const { children: _children, client: _client, ...rest } = props as RoomOptions & { children?: ReactNode; client?: undefined };
    const client = new RoomClient(rest);
    setOwned(client);
    client.start().catch(() => {
      // Reported through the client's `error` and `close` events, and `useStatus()`.
    });
    return () => {
      setOwned((current) => (current === client ? null : current));
      void client.close();
    };
    // The connection's identity is url + room + token; other options are read at creation.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return createElement(RoomContext.Provider, { value: given ?? owned }, props.children);
}

/** The room's client, or null while the provider is still creating it. */
export function useRoom(): RoomClient | null {
  return useContext(RoomContext);
}

function useStore(): RoomStore | null {
  const client = useRoom();
  return client === null ? null : storeOf(client);
}

const noop = (): void => undefined;
const never = (): (() => void) => noop;
const EMPTY_ROWS: [string, Value][] = [];
const NO_PEERS: PresenceInfo[] = [];

function useExternal<T>(store: RoomStore | null, subscribe: (s: RoomStore, cb: Listener) => () => void, read: (s: RoomStore) => T, fallback: T): T {
  const sub = useCallback((cb: Listener) => (store === null ? never() : subscribe(store, cb)), [store, subscribe]);
  const get = useCallback(() => (store === null ? fallback : read(store)), [store, read, fallback]);
  return useSyncExternalStore(sub, get, get);
}

/** The value at `path` (JSON decoded; bytes when it is not JSON), undefined when absent. */
export function useValue<T = Value>(path: string): T | undefined {
  const store = useStore();
  const subscribe = useCallback((s: RoomStore, cb: Listener) => s.subscribePath(path, cb), [path]);
  const read = useCallback((s: RoomStore) => s.value(path), [path]);
  return useExternal(store, subscribe, read, undefined) as T | undefined;
}

/** `[path, value]` of the live entries at or below `prefix`, sorted by path. */
export function useEntries<T = Value>(prefix = "/"): [string, T][] {
  const store = useStore();
  const subscribe = useCallback((s: RoomStore, cb: Listener) => s.subscribePrefix(prefix, cb), [prefix]);
  const read = useCallback((s: RoomStore) => s.entries(prefix), [prefix]);
  return useExternal(store, subscribe, read, EMPTY_ROWS) as [string, T][];
}

/** A write function, stable for the room: `set(path, value)` writes JSON, `set(path, undefined)` deletes. */
export type Setter = (path: string, value: unknown) => void;

/**
 * `set(path, value)`: a JSON write (`Uint8Array` values are written as they are),
 * applied locally at once and sent with the writes of the same turn; `undefined` deletes.
 * Before the provider has a client, a write throws.
 */
export function useSet(): Setter {
  const client = useRoom();
  return useCallback(
    (path: string, value: unknown) => {
      if (client === null) throw new Error("roomsync: useSet() outside a connected RoomProvider");
      if (value === undefined) client.delete(path);
      else if (isBytes(value)) client.set(path, value);
      else client.setJSON(path, value);
    },
    [client],
  );
}

/** An update of this peer's presence: a new state, a shallow patch of an object state, or a function of the old state. */
export type PresenceUpdate = (patch: unknown | ((old: unknown) => unknown), options?: { replace?: boolean }) => void;

/**
 * `[state, update]`: this peer's presence and its updater. `update({cursor})` merges the
 * fields into the current object state (`{replace: true}` replaces it); `update(null)`
 * clears the presence (the others see this peer leave).
 */
export function usePresence<T = unknown>(): [T | null, PresenceUpdate] {
  const store = useStore();
  const subscribe = useCallback((s: RoomStore, cb: Listener) => s.subscribeSelf(cb), []);
  const read = useCallback((s: RoomStore) => s.self(), []);
  const state = useExternal(store, subscribe, read, null) as T | null;
  const update = useCallback<PresenceUpdate>(
    (patch, options) => {
      if (store === null) return;
      const old = store.self();
      let next = typeof patch === "function" ? (patch as (old: unknown) => unknown)(old) : patch;
      const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
      if (!options?.replace && typeof patch !== "function" && isObject(old) && isObject(next)) next = { ...old, ...next };
      store.setSelf(next);
    },
    [store],
  );
  return [state, update];
}

/** The other peers' presence (`{peer, actor, state}`), in arrival order; empty while offline. */
export function useOthers<T = unknown>(): (PresenceInfo & { state: T })[] {
  const store = useStore();
  const subscribe = useCallback((s: RoomStore, cb: Listener) => s.subscribeOthers(cb), []);
  const read = useCallback((s: RoomStore) => s.others(), []);
  return useExternal(store, subscribe, read, NO_PEERS) as (PresenceInfo & { state: T })[];
}

/** The connection status: `connecting | open | synced | offline | closed`. */
export function useStatus(): Status {
  const store = useStore();
  const subscribe = useCallback((s: RoomStore, cb: Listener) => s.subscribeStatus(cb), []);
  const read = useCallback((s: RoomStore) => s.client.status, []);
  return useExternal(store, subscribe, read, "connecting" as Status);
}
