/**
 * The collaborative board: notes (add, drag, edit, delete), images dropped onto the board
 * (uploaded as blobs, shown on every board), live cursors and names through presence, and
 * the connection status. Room state layout:
 *
 *   /notes/<id>/text   string          /notes/<id>/pos  {x, y}     /notes/<id>/color  string
 *   /images/<id>       {hash, type, name, x, y}
 *
 * Text, position and colour are separate entries, so one peer moving a note while another
 * edits it never loses either change (last writer wins per entry).
 */
import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent, type PointerEvent } from "react";
import type { RoomClient } from "roomsync-client";
import { RoomProvider, useEntries, useOthers, usePresence, useRoom, useSet, useStatus } from "roomsync-client/react";
import { readFragment, type Fragment } from "./fragment";

interface Pos {
  x: number;
  y: number;
}
interface Note {
  id: string;
  text: string;
  pos: Pos;
  color: string;
}
interface ImageRef {
  hash: string;
  type: string;
  name: string;
  x: number;
  y: number;
}
interface Me {
  name: string;
  color: string;
  cursor: Pos | null;
}

const COLORS = ["#ffe066", "#a5d8ff", "#b2f2bb", "#ffc9c9", "#d0bfff", "#ffd8a8"];
const CURSOR_MS = 30;

function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function App() {
  const [fragment, setFragment] = useState<Fragment>(() => readFragment());
  useEffect(() => {
    const onHash = () => setFragment(readFragment());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  const name = useMemo(() => fragment.name ?? `guest-${randomId().slice(0, 4)}`, [fragment.name]);
  return (
    <RoomProvider url={window.location.origin} room={fragment.room} token={fragment.token} logger={null}>
      <Board room={fragment.room} initialName={name} />
    </RoomProvider>
  );
}

function useNotes(): Note[] {
  const rows = useEntries<unknown>("/notes");
  return useMemo(() => {
    const byId = new Map<string, Partial<Note>>();
    for (const [path, value] of rows) {
      const [, , id, field] = path.split("/");
      if (!id || !field) continue;
      const note = byId.get(id) ?? { id };
      if (field === "text" && typeof value === "string") note.text = value;
      if (field === "pos" && typeof value === "object" && value !== null) note.pos = value as Pos;
      if (field === "color" && typeof value === "string") note.color = value;
      byId.set(id, note);
    }
    return [...byId.values()]
      .filter((n) => n.pos !== undefined)
      .map((n): Note => ({ id: n.id!, pos: n.pos!, text: n.text ?? "", color: n.color ?? COLORS[0]! }));
  }, [rows]);
}

/** The problem that stopped the client (a refused token, a closed room), if any. */
function useStopReason(): string | null {
  const room = useRoom();
  const [reason, setReason] = useState<string | null>(null);
  useEffect(() => {
    setReason(null);
    if (room === null) return;
    return room.on("close", (e) => {
      if (e.closeCode !== 1000) setReason(`${e.code ?? "closed"} (close ${e.closeCode}): ${e.error?.message ?? e.message}`);
    });
  }, [room]);
  return reason;
}

function Board({ room, initialName }: { room: string; initialName: string }) {
  const status = useStatus();
  const notes = useNotes();
  const images = useEntries<ImageRef>("/images");
  const set = useSet();
  const client = useRoom();
  const [me, updateMe] = usePresence<Me>();
  const others = useOthers<Me>();
  const stop = useStopReason();
  const board = useRef<HTMLDivElement>(null);
  const lastCursor = useRef(0);
  const [uploading, setUploading] = useState(0);
  const [uploadError, setUploadError] = useState<string | null>(null);

  useEffect(() => {
    if (client === null) return;
    updateMe({ name: initialName, color: COLORS[Math.floor(Math.random() * COLORS.length)]!, cursor: null }, { replace: true });
  }, [client, initialName, updateMe]);

  const boardPos = useCallback((clientX: number, clientY: number): Pos => {
    const r = board.current!.getBoundingClientRect();
    return { x: Math.round(clientX - r.left), y: Math.round(clientY - r.top) };
  }, []);

  const onBoardMove = (e: PointerEvent<HTMLDivElement>) => {
    const now = performance.now();
    if (now - lastCursor.current < CURSOR_MS) return;
    lastCursor.current = now;
    updateMe({ cursor: boardPos(e.clientX, e.clientY) });
  };

  const addNote = () => {
    const id = randomId();
    const n = notes.length;
    set(`/notes/${id}/pos`, { x: 40 + ((n * 36) % 400), y: 40 + ((n * 28) % 300) });
    set(`/notes/${id}/color`, COLORS[n % COLORS.length]);
    set(`/notes/${id}/text`, "");
  };

  const upload = async (files: File[], at: Pos) => {
    if (client === null) return;
    setUploadError(null);
    for (const [i, file] of files.filter((f) => f.type.startsWith("image/")).entries()) {
      setUploading((u) => u + 1);
      try {
        const hash = await client.putBlob(new Uint8Array(await file.arrayBuffer()));
        set(`/images/${randomId()}`, { hash, type: file.type, name: file.name, x: at.x + i * 24, y: at.y + i * 24 });
      } catch (error) {
        setUploadError(`upload of ${file.name} failed: ${String(error)}`);
      } finally {
        setUploading((u) => u - 1);
      }
    }
  };

  const onDrop = (e: DragEvent<HTMLDivElement>) => {
    e.preventDefault();
    void upload([...e.dataTransfer.files], boardPos(e.clientX, e.clientY));
  };

  return (
    <div className="app">
      <header>
        <strong>roomsync board</strong>
        <span className="room" data-testid="room">
          room {room}
        </span>
        <span className={`badge ${status}`} data-testid="status" title="connection status">
          {status}
        </span>
        <label>
          name{" "}
          <input
            data-testid="name"
            value={me?.name ?? ""}
            maxLength={40}
            onChange={(e) => updateMe({ name: e.target.value })}
          />
        </label>
        <span data-testid="peers">
          {others.length + 1} online{others.length > 0 ? `: ${others.map((o) => o.state.name).join(", ")}` : ""}
        </span>
        <button data-testid="add-note" onClick={addNote} disabled={client === null}>
          + note
        </button>
        <label className="file">
          + image
          <input
            data-testid="image-input"
            type="file"
            accept="image/*"
            onChange={(e) => void upload([...(e.target.files ?? [])], { x: 60, y: 60 })}
          />
        </label>
        {uploading > 0 && <span data-testid="uploading">uploading…</span>}
        {client && (
          <span className="root" data-testid="root" data-root={client.root} title="canonical root of this replica (SPEC §1)">
            root {client.root.slice(0, 12)}
          </span>
        )}
      </header>
      {stop && (
        <p className="error" data-testid="stopped">
          {stop}. {stop.startsWith("auth") || stop.startsWith("forbidden") ? "Add #token=… to the URL, or run the server with --dev." : ""}
        </p>
      )}
      {uploadError && <p className="error">{uploadError}</p>}
      <div
        className="board"
        data-testid="board"
        ref={board}
        onPointerMove={onBoardMove}
        onPointerLeave={() => updateMe({ cursor: null })}
        onDragOver={(e) => e.preventDefault()}
        onDrop={onDrop}
      >
        {images.map(([path, img]) => (
          <BoardImage key={path} path={path} image={img} client={client} />
        ))}
        {notes.map((note) => (
          <StickyNote key={note.id} note={note} boardPos={boardPos} />
        ))}
        {others.map((o) =>
          o.state?.cursor ? (
            <div
              key={o.peer}
              className="cursor"
              data-testid="cursor"
              style={{ left: o.state.cursor.x, top: o.state.cursor.y, borderColor: o.state.color }}
            >
              <span style={{ background: o.state.color }}>{o.state.name}</span>
            </div>
          ) : null,
        )}
        {notes.length === 0 && images.length === 0 && (
          <p className="hint">Add a note, or drop an image here. Open this page twice to see it sync.</p>
        )}
      </div>
    </div>
  );
}

function StickyNote({ note, boardPos }: { note: Note; boardPos: (x: number, y: number) => Pos }) {
  const set = useSet();
  const grab = useRef<Pos | null>(null);
  const base = `/notes/${note.id}`;
  const onDown = (e: PointerEvent<HTMLDivElement>) => {
    const p = boardPos(e.clientX, e.clientY);
    grab.current = { x: p.x - note.pos.x, y: p.y - note.pos.y };
    e.currentTarget.setPointerCapture(e.pointerId);
  };
  const onMove = (e: PointerEvent<HTMLDivElement>) => {
    if (grab.current === null) return;
    const p = boardPos(e.clientX, e.clientY);
    set(`${base}/pos`, { x: Math.max(0, p.x - grab.current.x), y: Math.max(0, p.y - grab.current.y) });
  };
  const onUp = () => {
    grab.current = null;
  };
  const remove = () => {
    for (const field of ["text", "pos", "color"]) set(`${base}/${field}`, undefined);
  };
  return (
    <div className="note" data-testid="note" data-note={note.id} style={{ left: note.pos.x, top: note.pos.y, background: note.color }}>
      <div className="grip" data-testid="grip" onPointerDown={onDown} onPointerMove={onMove} onPointerUp={onUp}>
        <button className="close" title="delete" data-testid="delete-note" onClick={remove} onPointerDown={(e) => e.stopPropagation()}>
          ×
        </button>
      </div>
      <textarea
        data-testid="note-text"
        value={note.text}
        placeholder="write…"
        onChange={(e) => set(`${base}/text`, e.target.value)}
      />
    </div>
  );
}

/** Fetch a blob (hash-verified by the client) and show it; retried until it is available. */
function useBlobUrl(client: RoomClient | null, hash: string, type: string): string | null {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    if (client === null) return;
    let cancelled = false;
    let made: string | null = null;
    const load = async () => {
      for (let attempt = 0; attempt < 20 && !cancelled; attempt++) {
        try {
          const bytes = await client.getBlob(hash);
          if (cancelled) return;
          made = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type }));
          setUrl(made);
          return;
        } catch {
          await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 3000)));
        }
      }
    };
    void load();
    return () => {
      cancelled = true;
      if (made !== null) URL.revokeObjectURL(made);
    };
  }, [client, hash, type]);
  return url;
}

function BoardImage({ path, image, client }: { path: string; image: ImageRef; client: RoomClient | null }) {
  const url = useBlobUrl(client, image.hash, image.type);
  return (
    <figure className="image" data-testid="image" data-hash={image.hash} data-path={path} style={{ left: image.x, top: image.y }}>
      {url ? <img src={url} alt={image.name} data-testid="image-loaded" /> : <span>loading {image.name}…</span>}
    </figure>
  );
}
