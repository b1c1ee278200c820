#!/usr/bin/env node
/**
 * The TypeScript client (clients/js, built dist/) against `roomsync serve --dev`, compared in
 * the same run with the Python SDK (roomsync.client):
 *
 *   1. full catch-up: a room loaded with N entries (default 100,000; `/items/<i>`, a
 *      ~40-byte JSON value each); a fresh client connects and we time connect() until
 *      synced (hello, welcome, every catch-up chunk received, decoded and applied, the
 *      authoritative done chunk imposed). Then, separately, the first read of the
 *      canonical root (the MST build and hash of N entries), and a check that it equals
 *      the server's `mst-root`. The JS client runs with binary packs (default) and with
 *      JSON+base64 packs; the Python SDK with binary packs.
 *   2. steady: two clients in one room, one writes 500 changes/s (one change per write,
 *      a pack per write) for D seconds, the other records the latency of each change
 *      (write -> change event, one process, one clock). Same for two Python clients.
 *
 * Usage:  node bench/js_client.mjs [--entries 100000] [--seconds 10] [--rate 500]
 * Needs `roomsync` (or ROOMSYNC_CMD) and python with roomsync installed; builds
 * clients/js/dist with `npm run build` when it is missing. Server pinned to core 0 and
 * this process to core 1 when `taskset` exists (as bench/README.md describes).
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const JS_DIR = fileURLToPath(new URL("../clients/js/", import.meta.url));
const require = createRequire(join(JS_DIR, "package.json"));

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const ENTRIES = arg("entries", 100_000);
const SECONDS = arg("seconds", 10);
const RATE = arg("rate", 500);
const TARGET_MS = 500;

if (!existsSync(join(JS_DIR, "dist", "index.js"))) {
  if (!existsSync(join(JS_DIR, "node_modules"))) spawnSync("npm", ["ci"], { cwd: JS_DIR, stdio: "inherit" });
  spawnSync("npm", ["run", "build"], { cwd: JS_DIR, stdio: "inherit" });
}
const WebSocket = require("ws");
const { connect } = await import(join(JS_DIR, "dist", "index.js"));

const log = (...a) => console.log(...a);
const hasTaskset = spawnSync("taskset", ["--version"], { stdio: "ignore" }).status === 0 && cpus().length > 1;
if (hasTaskset) spawnSync("taskset", ["-pc", "1", String(process.pid)], { stdio: "ignore" });

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

const cmd = process.env.ROOMSYNC_CMD ? process.env.ROOMSYNC_CMD.split(" ") : ["roomsync"];
const port = await freePort();
const dataDir = mkdtempSync(join(tmpdir(), "roomsync-jsbench-"));
const serverArgs = [...cmd, "serve", "--dev", "--host", "127.0.0.1", "--port", String(port), "--data-dir", dataDir];
// As bench/peers (servers.py ROOMSYNC_ENV): no per-peer rate limit. With the default
// policy (200 messages/s a peer) a writer of one pack per change at 500/s is refused
// `rate-limited` and both SDKs pause 250 ms: that would measure the limit, not latency.
const env = {
  ...process.env,
  ROOMSYNC_POLICY_RATE_MESSAGES_PER_S: "1000000000",
  ROOMSYNC_POLICY_RATE_BYTES_PER_S: "1000000000000000",
  ROOMSYNC_POLICY_RATE_BURST_MESSAGES: "1000000000",
  ROOMSYNC_POLICY_RATE_BURST_BYTES: "1000000000000000",
};
const opts = { stdio: ["ignore", "ignore", "ignore"], env };
const server = hasTaskset
  ? spawn("taskset", ["-c", "0", ...serverArgs], opts)
  : spawn(serverArgs[0], serverArgs.slice(1), opts);
const url = `http://127.0.0.1:${port}`;

async function stopServer() {
  if (server.exitCode !== null) return;
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  const t = setTimeout(() => server.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(t);
  rmSync(dataDir, { recursive: true, force: true });
}
process.on("SIGINT", () => stopServer().then(() => process.exit(130)));

function pct(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
const ms = (x) => `${x.toFixed(1)} ms`;

function python(script, args) {
  const out = spawnSync("python", ["-c", script, ...args], { encoding: "utf8", timeout: 600_000 });
  if (out.status !== 0) throw new Error(`python failed: ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split("\n").pop());
}

const PY_CATCHUP = `
import asyncio, json, sys, time
from roomsync.client import connect
async def main(url, room):
    t0 = time.perf_counter()
    c = await connect(url, room)
    await c.wait_synced(300)
    synced = (time.perf_counter() - t0) * 1000
    t1 = time.perf_counter()
    root = c.root
    root_ms = (time.perf_counter() - t1) * 1000
    server = await c.server_root()
    n = sum(1 for _ in c.items())
    await c.close()
    print(json.dumps({"synced_ms": synced, "root_ms": root_ms, "root_ok": root == server, "count": n, "binary": "binary" in c.caps}))
asyncio.run(main(sys.argv[1], sys.argv[2]))
`;

const PY_STEADY = `
import asyncio, json, sys, time
from roomsync.client import connect
async def main(url, room, seconds, rate):
    a = await connect(url, room)
    b = await connect(url, room)
    await a.wait_synced(30); await b.wait_synced(30)
    lat = []
    def seen(change):
        if change.path.startswith("/steady/") and change.value:
            lat.append((time.perf_counter() - json.loads(change.value)["t"]) * 1000)
    b.on_change(seen)
    total = int(seconds * rate)
    t0 = time.perf_counter()
    for i in range(total):
        due = t0 + i / rate
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        a.set_json(f"/steady/{i % 1000}", {"i": i, "t": time.perf_counter()})
    await a.flush(60)
    deadline = time.perf_counter() + 10
    while len(lat) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    await a.close(); await b.close()
    print(json.dumps({"lat": lat, "sent": total, "elapsed_s": elapsed}))
asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
`;

try {
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  log(`# roomsync JS client bench: ${new Date().toISOString()}`);
  log(`command: node bench/js_client.mjs --entries ${ENTRIES} --seconds ${SECONDS} --rate ${RATE}`);
  log(`node ${process.version}; ${cpus()[0]?.model ?? "cpu?"} x${cpus().length}; pinning: ${hasTaskset ? "server core 0, clients core 1" : "none"}`);

  // -- load the room ---------------------------------------------------------------------------
  const room = "bench-catchup";
  const loader = await connect({ url, room, WebSocket, logger: null });
  const tLoad = performance.now();
  for (let i = 0; i < ENTRIES; i++) loader.setJSON(`/items/${i}`, { title: `item ${i}`, done: i % 3 === 0, n: i });
  await loader.flush(600_000);
  log(`\nloaded ${ENTRIES} entries through one JS client in ${ms(performance.now() - tLoad)}`);
  await loader.close();

  // -- 1. full catch-up ------------------------------------------------------------------------
  log(`\n## 1. full catch-up of ${ENTRIES} entries (connect -> synced, decode + apply included)`);
  const rows = [];
  for (const binary of [true, true, true, false]) {
    const t0 = performance.now();
    const c = await connect({ url, room, WebSocket, logger: null, binary });
    await c.waitSynced(300_000);
    const synced = performance.now() - t0;
    const t1 = performance.now();
    const root = c.root;
    const rootMs = performance.now() - t1;
    const serverRoot = await c.serverRoot();
    rows.push({ client: `js ${binary ? "binary" : "json"}`, synced, rootMs, ok: root === serverRoot && c.size === ENTRIES });
    await c.close();
  }
  const py = python(PY_CATCHUP, [url, room]);
  rows.push({ client: `python ${py.binary ? "binary" : "json"}`, synced: py.synced_ms, rootMs: py.root_ms, ok: py.root_ok && py.count === ENTRIES });
  log("| client | connect -> synced | first root read (MST of all entries) | root = server's, count ok |");
  log("|---|---|---|---|");
  for (const r of rows) log(`| ${r.client} | ${ms(r.synced)} | ${ms(r.rootMs)} | ${r.ok} |`);
  const jsBinary = rows.filter((r) => r.client === "js binary").map((r) => r.synced).sort((a, b) => a - b);
  const best = jsBinary[0];
  const median = jsBinary[Math.floor(jsBinary.length / 2)];
  log(`JS binary: best ${ms(best)}, median ${ms(median)} of ${jsBinary.length} runs; target < ${TARGET_MS} ms: ${median < TARGET_MS ? "met" : "NOT met"}`);

  // -- 2. steady writes between two clients ----------------------------------------------------
  log(`\n## 2. steady ${RATE} writes/s for ${SECONDS} s, writer -> other client's change event`);
  const a = await connect({ url, room: "bench-steady", WebSocket, logger: null });
  const b = await connect({ url, room: "bench-steady", WebSocket, logger: null });
  await a.waitSynced(30_000);
  await b.waitSynced(30_000);
  const lat = [];
  const dec = new TextDecoder();
  b.on("change", (e) => {
    if (!e.local && e.value && e.path.startsWith("/steady/")) lat.push(performance.now() - JSON.parse(dec.decode(e.value)).t);
  });
  const total = Math.round(SECONDS * RATE);
  const t0 = performance.now();
  let sent = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * RATE) + 1);
      // One write per change event turn: each write is its own pack, as in the Python loop.
      while (sent < due) {
        a.setJSON(`/steady/${sent % 1000}`, { i: sent, t: performance.now() });
        sent++;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(0, (sent / RATE) * 1000 - (performance.now() - t0)));
    };
    tick();
  });
  await a.flush(60_000);
  const deadline = performance.now() + 10_000;
  while (lat.length < total && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const elapsed = (performance.now() - t0) / 1000;
  await a.close();
  await b.close();
  const pyS = python(PY_STEADY, [url, "bench-steady-py", String(SECONDS), String(RATE)]);
  const line = (name, l, n, secs) => {
    const s = [...l].sort((x, y) => x - y);
    return `| ${name} | ${n} | ${s.length} | ${(n / secs).toFixed(0)}/s | ${ms(pct(s, 0.5))} | ${ms(pct(s, 0.95))} | ${ms(pct(s, 0.99))} | ${ms(s[s.length - 1] ?? NaN)} |`;
  };
  log("| clients | writes | delivered | achieved rate | p50 | p95 | p99 | max |");
  log("|---|---|---|---|---|---|---|---|");
  log(line("js -> js", lat, total, elapsed));
  log(line("python -> python", pyS.lat, pyS.sent, pyS.elapsed_s));
} finally {
  await stopServer();
}
