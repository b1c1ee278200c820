/**
 * Merkle Search Tree reconcile (SPEC §1) as a generator flow, sans I/O (a port of
 * `roomsync.core.reconcile.reconcile`, the exact `mst-get` walk).
 *
 * ```ts
 * const flow = reconcile(tree, remoteRoot);          // remoteRoot from mst-root{root}
 * let step = flow.next();
 * while (!step.done) {
 *   // send mst-get{hashes: step.value.hashes.map(toHex)}, await mst-nodes
 *   step = flow.next(new Map(nodes.map((n) => [n.hash, b64decode(n.data)])));
 * }
 * const result = step.value;                          // pull / push / complete
 * ```
 *
 * Then `request{paths}` for every differing path (`pull` + `push`): the answer carries
 * tombstones too, so deletes win where they should. A remote subtree is skipped when the
 * local subtree for the same key range hashes the same, expanded from local bytes when
 * the local tree knows its hash, and fetched otherwise (one tree level per round).
 */

import { bytesEqual, compareUtf8, sha256, toHex } from "./bytes.js";
import { CodecError } from "./errors.js";
import type { MerkleSearchTree } from "./mst.js";
import { decodeNode } from "./postcard.js";

export const DEFAULT_MAX_HASHES = 256;

/** Ask the remote for these nodes (`mst-get{hashes}`); send back hex hash -> node bytes. */
export interface FetchNodes {
  hashes: Uint8Array[];
}

export interface ReconcileResult {
  /** Paths where the remote has a leaf we lack or that differs. */
  pull: string[];
  /** Local live paths the remote lacks or has differently. */
  push: string[];
  rounds: number;
  nodesFetched: number;
  bytesFetched: number;
  /** False when the remote no longer had an announced node (its tree moved on). */
  complete: boolean;
}

type Item = [Uint8Array, string | null, string | null];

export function* reconcile(
  local: MerkleSearchTree,
  remoteRoot: Uint8Array | null,
  maxHashes = DEFAULT_MAX_HASHES,
): Generator<FetchNodes, ReconcileResult, Map<string, Uint8Array>> {
  const pull = new Set<string>();
  const push = new Set<string>();
  let frontier: Item[] = [];
  let rounds = 0;
  let nodesFetched = 0;
  let bytesFetched = 0;
  let complete = true;

  const child = (h: Uint8Array | null, lo: string | null, hi: string | null): void => {
    if (h === null) for (const p of local.pathsBetween(lo, hi)) push.add(p);
    else frontier.push([h, lo, hi]);
  };
  const expand = (h: Uint8Array, data: Uint8Array, lo: string | null, hi: string | null): void => {
    const node = decodeNode(data);
    if (node.entries.length === 0) throw new CodecError(`bad postcard: MST node ${toHex(h)} has no entries`);
    let bound = lo;
    let next = node.left;
    for (const { path, leaf, right } of node.entries) {
      if ((bound !== null && compareUtf8(path, bound) <= 0) || (hi !== null && compareUtf8(path, hi) >= 0)) {
        throw new CodecError(`bad postcard: MST node ${toHex(h)} has entry ${JSON.stringify(path)} out of order`);
      }
      child(next, bound, path);
      const mine = local.leaf(path);
      if (!bytesEqual(mine, leaf)) {
        pull.add(path);
        if (mine !== null) push.add(path);
      }
      bound = path;
      next = right;
    }
    child(next, bound, hi);
  };
  const settleLocally = (): Item[] => {
    const toFetch: Item[] = [];
    while (frontier.length) {
      const item = frontier.pop()!;
      const [h, lo, hi] = item;
      if (bytesEqual(local.rangeHash(lo, hi), h)) continue;
      const data = local.node(h);
      if (data === undefined) toFetch.push(item);
      else expand(h, data, lo, hi);
    }
    return toFetch;
  };

  const empty = remoteRoot === null || remoteRoot.every((b) => b === 0);
  if (empty) for (const p of local.paths()) push.add(p);
  else if (!bytesEqual(remoteRoot, local.rootHash)) frontier.push([remoteRoot!, null, null]);

  while (frontier.length && complete) {
    const wanted = settleLocally();
    for (let start = 0; start < wanted.length; start += maxHashes) {
      const batch = wanted.slice(start, start + maxHashes);
      const unique = new Map<string, Uint8Array>();
      for (const [h] of batch) unique.set(toHex(h), h);
      const reply = yield { hashes: [...unique.values()] };
      rounds++;
      for (const [h, lo, hi] of batch) {
        const data = reply.get(toHex(h));
        if (data === undefined) {
          complete = false;
          continue;
        }
        if (!bytesEqual(sha256(data), h)) {
          throw new CodecError(`bad postcard: MST node ${toHex(h)} does not match its hash`);
        }
        nodesFetched++;
        bytesFetched += data.length;
        expand(h, data, lo, hi);
      }
      if (!complete) break;
    }
    if (!complete) frontier = [];
  }
  const sorted = (s: Set<string>): string[] => [...s].sort(compareUtf8);
  return { pull: sorted(pull), push: sorted(push), rounds, nodesFetched, bytesFetched, complete };
}

/** Every path whose live leaf differs (pull + push), sorted. */
export function differing(result: ReconcileResult): string[] {
  return [...new Set([...result.pull, ...result.push])].sort(compareUtf8);
}
