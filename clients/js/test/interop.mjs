#!/usr/bin/env node
/**
 * The JS side of tests/client/test_js_interop.py: drives the *built* package (dist/) in
 * one room with the Python SDK. Protocol, through the room itself:
 *
 *   1. write /js/0..N-1 and /shared/0..S-1 (concurrently with Python's /py/… and /shared/…),
 *      upload a blob and write its hash at /js/blob, then /js/ready
 *   2. once /py/ready is seen: delete /py/0../py/D-1, check Python's blob (/py/blob), /js/done
 *   3. once /py/done is seen: flush, wait until the local root equals the server's
 *   4. print one JSON line: {root, server_root, count, blob_ok, ...} and exit 0
 *
 * Usage: node test/interop.mjs <server url> <room> [n] [shared] [deletes]
 */
import WebSocket from "ws";
import { connect } from "../dist/index.js";

const [url, room, n = "200", shared = "50", deletes = "20"] = process.argv.slice(2);
const N = Number(n);
const S = Number(shared);
const D = Number(deletes);
const deadline = Date.now() + 60_000;

async function until(predicate, what) {
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`interop.mjs timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const client = await connect({ url, room, WebSocket, logger: null, actor: "js-peer" });
try {
  await client.waitSynced(20_000);
  for (let i = 0; i < N; i++) client.setJSON(`/js/${i}`, { from: "js", i });
  for (let i = 0; i < S; i++) client.setJSON(`/shared/${i}`, { from: "js", i });
  const blob = new TextEncoder().encode("a blob from the JS client ".repeat(500));
  const hash = await client.putBlob(blob, 20_000);
  client.setText("/js/blob", hash);
  client.setText("/js/ready", "1");
  await client.flush(20_000);

  await until(() => client.get("/py/ready") !== undefined, "/py/ready");
  for (let i = 0; i < D; i++) client.delete(`/py/${i}`);
  let blobOk = false;
  await until(() => client.get("/py/blob") !== undefined, "/py/blob");
  const pyHash = client.getText("/py/blob");
  const pyBlob = await client.getBlob(pyHash, 20_000);
  blobOk = new TextDecoder().decode(pyBlob).startsWith("a blob from the Python client");
  client.setText("/js/done", "1");
  await client.flush(20_000);

  await until(() => client.get("/py/done") !== undefined, "/py/done");
  await client.flush(20_000);
  let serverRoot = "";
  await until(async () => {
    serverRoot = await client.serverRoot();
    return client.root === serverRoot;
  }, "the server's root");
  const out = {
    root: client.root,
    server_root: serverRoot,
    count: client.size,
    blob_ok: blobOk,
    blob_hash: hash,
    binary: client.caps.includes("binary"),
    deleted_seen: Array.from({ length: D }, (_, i) => client.get(`/js/${i}`) === undefined).every(Boolean),
  };
  process.stdout.write(JSON.stringify(out) + "\n");
} finally {
  await client.close();
}
