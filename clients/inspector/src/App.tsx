/**
 * The room inspector (read-only): rooms with peers and head; one room's head, canonical
 * root, peers, lineage, entries (paged, pretty-printed), presence activity and its recent
 * captured envelopes, live; close codes and node metrics over the last minutes.
 *
 * Every read is a control-plane command (`room list|get|capture`, `archive list`,
 * `query run`) or `/metrics`. The operator token comes from the URL fragment
 * (`#token=…`, then removed from the address bar) or is pasted; it is kept in
 * sessionStorage and sent only in the Authorization header.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { byLabel, control, ControlError, metrics } from "./control";

const TOKEN_KEY = "roomsync.inspect.token";
export const ENTRIES_QUERY = "inspect.entries";
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
interface Row {
  path: string;
  value: unknown;
  raw?: string | null;
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
      <pre>roomsync token mint --caps room:get,room:list,room:capture,archive:list,query:run --ttl 8h</pre>
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
      <Presence envelopes={envelopes} />
      <Entries token={token} room={room} head={v?.head ?? 0} />
      <Capture envelopes={envelopes} error={capture.error} />
    </div>
  );
}

/** Presence as the capture shows it: who published, how often, when last (states are redacted). */
function Presence({ envelopes }: { envelopes: Envelope[] }) {
  const byPeer = new Map<string, { n: number; last: number; left: boolean }>();
  for (const e of envelopes) {
    if (e.dir === "in" && e.type === "presence") {
      const p = byPeer.get(e.peer) ?? { n: 0, last: 0, left: false };
      byPeer.set(e.peer, { n: p.n + 1, last: e.at, left: e.cleared === true });
    }
    if (e.type === "close" || e.type === "presence-leave") {
      const peer = typeof e.left === "string" ? e.left : e.peer;
      const p = byPeer.get(peer);
      if (p) p.left = true;
    }
  }
  return (
    <div className="panel">
      <h2>presence</h2>
      <p className="muted">Peers that published presence in the captured window (the capture keeps no states).</p>
      <table data-testid="presence">
        <thead>
          <tr>
            <th>peer</th>
            <th>updates</th>
            <th>last</th>
          </tr>
        </thead>
        <tbody>
          {[...byPeer].map(([peer, p]) => (
            <tr key={peer}>
              <td className="mono">{peer}</td>
              <td>{p.n}</td>
              <td>
                {new Date(p.last).toLocaleTimeString()}
                {p.left ? " (left)" : ""}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Entries({ token, room, head }: { token: string; room: string; head: number }) {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1] ?? null;
  const { data, error } = usePoll(
    () => control<{ rows: Row[]; cursor: string | null }>(token, "query", "run", { room, name: ENTRIES_QUERY, limit: 25, ...(cursor ? { cursor } : {}) }),
    // Re-read when the head moves, else every few seconds.
    5000,
    [token, room, cursor, head],
  );
  const missing = error?.includes("query-spec-missing");
  return (
    <div className="panel">
      <h2>entries</h2>
      {missing ? (
        <div className="error" data-testid="entries-missing">
          <p>
            The inspector reads entries with the query spec <code>{ENTRIES_QUERY}</code>, which this node does not have. An operator with
            <code> query:define</code> defines it once:
          </p>
          <pre>{`roomsync control query define --json '{"name": "${ENTRIES_QUERY}", "spec": {"prefix": "/", "limit": 25}}'`}</pre>
        </div>
      ) : (
        error && <p className="error">{error}</p>
      )}
      <table data-testid="entries" className="entries">
        <tbody>
          {data?.rows.map((r) => (
            <tr key={r.path}>
              <td className="mono">{r.path}</td>
              <td>
                <pre>{r.raw != null ? `base64:${r.raw}` : JSON.stringify(r.value, null, 2)}</pre>
              </td>
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
