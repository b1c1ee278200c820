/**
 * The room inspector (read-only): rooms with peers and head; one room's head, canonical
 * root, peers, lineage, entries (paged, pretty-printed), each peer's presence state and
 * its recent captured envelopes, live; close codes and node metrics over the last minutes.
 *
 * Every read is a control-plane command (`room list|get|capture|entries|presence`,
 * `archive list`) or `/metrics`. The operator token comes from the URL fragment
 * (`#token=…`, then removed from the address bar) or is pasted; it is kept in
 * sessionStorage and sent only in the Authorization header.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { byLabel, control, ControlError, metrics } from "./control";

const TOKEN_KEY = "roomsync.inspect.token";
const ENTRIES_PAGE = 25;
const HISTORY = 150; // samples kept: 5 minutes at one per 2 s
const METRICS_MS = 2000;
const ROOM_MS = 1000;

interface RoomSummary {
  room: string;
  head: number;
  locked: boolean;
  closed: boolean;
}
interface RoomView extends RoomSummary {
  root: string;
  count: number;
  peers: number;
  node?: string | null;
  lineage: { archives: string[]; source?: string | null; checkpoint?: string | null };
}
interface Envelope {
  at: number;
  dir: "in" | "out";
  peer: string;
  type: string;
  bytes: number;
  [field: string]: unknown;
}
/** One entry of `room entries`. */
interface EntryView {
  path: string;
  seq: number;
  ts: number;
  counter: number;
  actor: string;
  deleted: boolean;
  size: number;
  value_b64: string | null;
  is_json: boolean;
  value_json: unknown;
  json_truncated: boolean;
}
/** One peer of `room presence`. */
interface PresencePeer {
  peer: string;
  actor: string;
  state: unknown;
  updated_ms: number;
}

function fragmentParams(): URLSearchParams {
  return new URLSearchParams(window.location.hash.replace(/^#/, ""));
}

/** Take a token out of the fragment (it stays out of the history and of screenshots). */
function initialToken(): string {
  const params = fragmentParams();
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", window.location.pathname + (rest ? `#${rest}` : ""));
    return fromUrl;
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

function errorText(error: unknown): string {
  if (error instanceof ControlError) {
    const r = error.reject;
    return `${r.class} (${r.code}): ${r.message}${r.required ? ` — needs ${r.required}` : ""}`;
  }
  return String(error);
}

/** Run `load` now and every `ms` while mounted (one at a time); its result or its error. */
function usePoll<T>(load: () => Promise<T>, ms: number, deps: unknown[]): { data: T | null; error: string | null } {
  const [state, setState] = useState<{ data: T | null; error: string | null }>({ data: null, error: null });
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const data = await load();
        if (!stopped) setState({ data, error: null });
      } catch (error) {
        if (!stopped) setState((s) => ({ data: s.data, error: errorText(error) }));
      }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}

export function App() {
  const [token, setToken] = useState(initialToken);
  const [room, setRoom] = useState<string | null>(() => fragmentParams().get("room"));
  const choose = useCallback((r: string) => {
    setRoom(r);
    history.replaceState(null, "", `${window.location.pathname}#room=${encodeURIComponent(r)}`);
  }, []);
  if (!token) return <TokenForm onToken={setToken} />;
  return (
    <div className="app">
      <header>
        <strong>roomsync inspector</strong>
        <span className="muted">read-only</span>
        <button
          onClick={() => {
            sessionStorage.removeItem(TOKEN_KEY);
            setToken("");
          }}
        >
          forget token
        </button>
      </header>
      <main>
        <section className="left">
          <Rooms token={token} selected={room} onSelect={choose} />
          <Metrics />
        </section>
        <section className="right">{room ? <Room key={room} token={token} room={room} /> : <p className="muted">Pick a room.</p>}</section>
      </main>
    </div>
  );
}

function TokenForm({ onToken }: { onToken: (t: string) => void }) {
  const [value, setValue] = useState("");
  return (
    <form
      className="token"
      onSubmit={(e) => {
        e.preventDefault();
        const t = value.trim();
        if (!t) return;
        sessionStorage.setItem(TOKEN_KEY, t);
        onToken(t);
      }}
    >
      <h1>roomsync inspector</h1>
      <p>
        Paste an operator token (it stays in this tab and goes only in the Authorization header), or open
        <code> /inspect/#token=…</code>. Mint one with:
      </p>
      <pre>roomsync token mint --caps room:get,room:list,room:capture,room:entries,room:presence,archive:list --ttl 8h</pre>
      <input data-testid="token-input" type="password" autoComplete="off" value={value} onChange={(e) => setValue(e.target.value)} placeholder="operator token" />
      <button type="submit">inspect</button>
    </form>
  );
}

function Rooms({ token, selected, onSelect }: { token: string; selected: string | null; onSelect: (r: string) => void }) {
  const { data, error } = usePoll(
    async () => {
      const page = await control<{ rooms: RoomSummary[]; cursor: string | null }>(token, "room", "list", { limit: 100 });
      const views = await Promise.all(
        page.rooms.slice(0, 50).map((r) => control<RoomView>(token, "room", "get", { room: r.room }).catch(() => null)),
      );
      return { rooms: page.rooms, views: new Map(views.filter((v): v is RoomView => v !== null).map((v) => [v.room, v])), more: page.cursor !== null };
    },
    2000,
    [token],
  );
  return (
    <div className="panel">
      <h2>rooms</h2>
      {error && <p className="error">{error}</p>}
      <table data-testid="rooms">
        <thead>
          <tr>
            <th>room</th>
            <th>peers</th>
            <th>head</th>
            <th>flags</th>
          </tr>
        </thead>
        <tbody>
          {data?.rooms.map((r) => (
            <tr key={r.room} className={r.room === selected ? "selected" : ""} onClick={() => onSelect(r.room)} data-testid="room-row" data-room={r.room}>
              <td>{r.room}</td>
              <td>{data.views.get(r.room)?.peers ?? "?"}</td>
              <td>{r.head}</td>
              <td>{[r.locked && "locked", r.closed && "closed"].filter(Boolean).join(" ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data?.more && <p className="muted">first 100 rooms shown</p>}
    </div>
  );
}

function Room({ token, room }: { token: string; room: string }) {
  const view = usePoll(() => control<RoomView>(token, "room", "get", { room }), ROOM_MS, [token, room]);
  const capture = usePoll(() => control<{ envelopes: Envelope[] }>(token, "room", "capture", { room, limit: 100 }), ROOM_MS, [token, room]);
  const v = view.data;
  const envelopes = capture.data?.envelopes ?? [];
  return (
    <div>
      <div className="panel">
        <h2>
          room <span data-testid="room-name">{room}</span>
        </h2>
        {view.error && <p className="error">{view.error}</p>}
        {v && (
          <dl className="facts">
            <dt>peers</dt>
            <dd data-testid="room-peers">{v.peers}</dd>
            <dt>head</dt>
            <dd data-testid="room-head">{v.head}</dd>
            <dt>entries</dt>
            <dd>{v.count}</dd>
            <dt>root</dt>
            <dd className="mono" data-testid="room-root">
              {v.root}
            </dd>
            <dt>flags</dt>
            <dd>{[v.locked ? "locked" : "unlocked", v.closed ? "closed" : "open", v.node ? `node ${v.node}` : ""].filter(Boolean).join(", ")}</dd>
            <dt>lineage</dt>
            <dd data-testid="room-lineage">
              {v.lineage.source ? (
                <>
                  forked from <b>{v.lineage.source}</b> at <span className="mono">{v.lineage.checkpoint?.slice(0, 16)}…</span>;{" "}
                </>
              ) : null}
              {v.lineage.archives.length === 0 ? "no archives" : `${v.lineage.archives.length} archive(s), newest first:`}
              <ol className="mono">
                {v.lineage.archives.slice(0, 10).map((a) => (
                  <li key={a}>{a}</li>
                ))}
              </ol>
            </dd>
          </dl>
        )}
      </div>
      <Presence token={token} room={room} envelopes={envelopes} />
      <Entries token={token} room={room} head={v?.head ?? 0} />
      <Capture envelopes={envelopes} error={capture.error} />
    </div>
  );
}

/** Each peer's current presence state (`room presence`) and, from the capture, how often it
 * published in the captured window. */
function Presence({ token, room, envelopes }: { token: string; room: string; envelopes: Envelope[] }) {
  const { data, error } = usePoll(() => control<{ peers: PresencePeer[] }>(token, "room", "presence", { room }), ROOM_MS, [token, room]);
  const updates = new Map<string, number>();
  for (const e of envelopes) {
    if (e.dir === "in" && e.type === "presence") updates.set(e.peer, (updates.get(e.peer) ?? 0) + 1);
  }
  const peers = data?.peers ?? [];
  return (
    <div className="panel">
      <h2>presence</h2>
      {error && <p className="error">{error}</p>}
      {data && peers.length === 0 && <p className="muted">No peer has presence in this room on this node.</p>}
      <table data-testid="presence" className="entries">
        <thead>
          <tr>
            <th>peer</th>
            <th>actor</th>
            <th>state</th>
            <th>updates</th>
            <th>last</th>
          </tr>
        </thead>
        <tbody>
          {peers.map((p) => (
            <tr key={p.peer} data-peer={p.peer}>
              <td className="mono">{p.peer}</td>
              <td>{p.actor}</td>
              <td>
                <pre data-testid="presence-state">{JSON.stringify(p.state, null, 2)}</pre>
              </td>
              <td>{updates.get(p.peer) ?? 0}</td>
              <td>{new Date(p.updated_ms).toLocaleTimeString()}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** How an entry's value is shown: its JSON pretty-printed, else its bytes as base64. */
function shown(e: EntryView): string {
  if (e.deleted) return "(deleted)";
  if (e.is_json) return JSON.stringify(e.value_json, null, 2);
  const note = e.json_truncated ? ` (${e.size} bytes: too big to show as JSON)` : "";
  return `base64:${e.value_b64 ?? ""}${note}`;
}

function Entries({ token, room, head }: { token: string; room: string; head: number }) {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [deleted, setDeleted] = useState(false);
  const cursor = cursors[cursors.length - 1] ?? null;
  useEffect(() => setCursors([null]), [room, deleted]);
  const { data, error } = usePoll(
    () =>
      control<{ entries: EntryView[]; cursor: string | null; head: number }>(token, "room", "entries", {
        room,
        limit: ENTRIES_PAGE,
        include_deleted: deleted,
        ...(cursor ? { cursor } : {}),
      }),
    // Re-read when the head moves, else every few seconds.
    5000,
    [token, room, cursor, head, deleted],
  );
  return (
    <div className="panel">
      <h2>entries</h2>
      {error && <p className="error">{error}</p>}
      <label className="muted">
        <input type="checkbox" checked={deleted} onChange={(e) => setDeleted(e.target.checked)} /> show deleted
      </label>
      <table data-testid="entries" className="entries">
        <thead>
          <tr>
            <th>path</th>
            <th>value</th>
            <th>seq</th>
            <th>actor</th>
          </tr>
        </thead>
        <tbody>
          {data?.entries.map((e) => (
            <tr key={e.path} data-path={e.path}>
              <td className="mono">{e.path}</td>
              <td>
                <pre>{shown(e)}</pre>
              </td>
              <td>{e.seq}</td>
              <td className="mono">{e.actor}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="pager">
        <button disabled={cursors.length < 2} onClick={() => setCursors((c) => c.slice(0, -1))}>
          ← previous
        </button>
        <span className="muted">page {cursors.length}</span>
        <button disabled={!data?.cursor} onClick={() => data?.cursor && setCursors((c) => [...c, data.cursor])}>
          next →
        </button>
      </div>
    </div>
  );
}

const SKIP = new Set(["at", "dir", "peer", "type", "bytes"]);

function Capture({ envelopes, error }: { envelopes: Envelope[]; error: string | null }) {
  return (
    <div className="panel">
      <h2>recent envelopes (live)</h2>
      {error && <p className="error">{error}</p>}
      <table data-testid="capture" className="capture">
        <tbody>
          {[...envelopes].reverse().map((e, i) => (
            <tr key={`${e.at}-${i}`} className={e.dir}>
              <td>{new Date(e.at).toLocaleTimeString()}</td>
              <td>{e.dir === "in" ? "→" : "←"}</td>
              <td className="mono">{e.peer}</td>
              <td>
                <b>{e.type}</b>
              </td>
              <td>{e.bytes} B</td>
              <td className="mono">
                {Object.entries(e)
                  .filter(([k]) => !SKIP.has(k))
                  .map(([k, val]) => `${k}=${JSON.stringify(val)}`)
                  .join(" ")}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

interface Sample {
  at: number;
  connections: number;
  peers: number;
  messagesIn: number;
  closes: Map<string, number>;
}

function Metrics() {
  const history = useRef<Sample[]>([]);
  const [, setVersion] = useState(0);
  const { error } = usePoll(
    async () => {
      const m = await metrics();
      const sumIn = [...byLabel(m, "roomsync_messages_total", "direction")].filter(([d]) => d === "in").reduce((n, [, v]) => n + v, 0);
      history.current = [
        ...history.current,
        { at: Date.now(), connections: m.get("roomsync_connections") ?? 0, peers: m.get("roomsync_peers") ?? 0, messagesIn: sumIn, closes: byLabel(m, "roomsync_closes_total", "code") },
      ].slice(-HISTORY);
      setVersion((v) => v + 1);
      return null;
    },
    METRICS_MS,
    [],
  );
  const h = history.current;
  const rate = (i: number) => (i === 0 ? 0 : Math.max(0, (h[i]!.messagesIn - h[i - 1]!.messagesIn) / ((h[i]!.at - h[i - 1]!.at) / 1000)));
  const first = h[0];
  const last = h[h.length - 1];
  const codes = new Set([...(last?.closes.keys() ?? [])]);
  const closesInWindow = [...codes].map((code): [string, number] => [code, (last?.closes.get(code) ?? 0) - (h.length > 1 ? first?.closes.get(code) ?? 0 : 0)]);
  return (
    <div className="panel">
      <h2>node, last {Math.round(((last?.at ?? 0) - (first?.at ?? 0)) / 60000) || "<1"} min</h2>
      {error && <p className="error">{error}</p>}
      <Chart label="connections" values={h.map((s) => s.connections)} />
      <Chart label="peers" values={h.map((s) => s.peers)} />
      <Chart label="messages in /s" values={h.map((_, i) => rate(i))} />
      <h3>closes by code</h3>
      <table data-testid="closes">
        <tbody>
          {closesInWindow.map(([code, n]) => (
            <tr key={code}>
              <td>{code}</td>
              <td>
                <Chart label="" values={h.map((s, i) => (i === 0 ? 0 : (s.closes.get(code) ?? 0) - (h[i - 1]!.closes.get(code) ?? 0)))} />
              </td>
              <td>
                {n} in window, {last?.closes.get(code) ?? 0} total
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Chart({ label, values }: { label: string; values: number[] }) {
  const w = 220;
  const hgt = 36;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? w / (HISTORY - 1) : 0;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(hgt - (v / max) * (hgt - 2) - 1).toFixed(1)}`).join(" ");
  const current = values.length ? values[values.length - 1]! : 0;
  return (
    <div className="chart">
      {label && <span className="label">{label}</span>}
      <svg width={w} height={hgt} viewBox={`0 0 ${w} ${hgt}`} role="img" aria-label={`${label} chart`}>
        <polyline points={points} fill="none" stroke="#1971c2" strokeWidth="1.5" />
      </svg>
      <span className="value">{Number.isInteger(current) ? current : current.toFixed(1)}</span>
    </div>
  );
}
