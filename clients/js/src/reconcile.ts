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
import { leafHash, type MerkleSearchTree, type Region } from "./mst.js";
import { decodeNode, type Change } from "./postcard.js";
import {
  BITS_MAX,
  BITS_MIN,
  DEFAULT_BITS,
  DEFAULT_LEAF_BITS,
  MAX_DEPTH,
  MAX_DIGESTS,
  MAX_LEAVES,
  MAX_PROBES,
  MAX_SLOTS,
  decodeAnswer,
  encodeRequest,
  leafChecksum,
  leafDigest,
  regionFps,
  slotDigest32,
  slotFp32,
  type Probe,
  type ProbeRequest,
  type ProbeResult,
  type SketchNode,
} from "./sketch.js";

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

// -- the batched flow (mst-probe / mst-sketch) ---------------------------------------------

/** Send one `mst-probe{data}` per request, all at once; send back the answers' `data`, in order. */
export interface SendProbes {
  requests: Uint8Array[];
}

export interface BatchedResult extends ReconcileResult {
  /** The remote's differing entries that came inline (authoritative for their paths). */
  entries: Change[];
  /** The remote root its last answer was computed at (null: empty). */
  remoteRoot: Uint8Array | null;
}

export const DEFAULT_FIRST_BUDGET = 1024;
export const DEFAULT_LEAF_MAX = 32;
export const MAX_REQUEST_BYTES = 192 * 1024;
export const MAX_BATCHED_ROUNDS = 64;

type Bounds = [string | null, boolean, string | null];

interface Ask {
  probe: Probe;
  leafBits: number;
  paths: string[];
  leaves: Uint8Array[];
}

/** The differing paths whose remote side did not come inline: what `request{paths}` must fetch. */
export function toRequest(result: BatchedResult): string[] {
  const inline = new Set(result.entries.map((c) => c.path));
  return differing(result).filter((p) => !inline.has(p));
}

/**
 * Find the paths where `local` and the remote tree differ with `mst-probe` (a port of
 * `roomsync.core.reconcile.reconcile_batched`): round 1 sketches the top of the remote
 * tree, then each round probes every region still in doubt, by a sketch where we hold
 * many entries and by our leaf digests where we hold few (the remote answers those with
 * its differing entries inline). Fingerprints are truncated, so the driver checks its
 * root against `remoteRoot` after merging and runs the exact walk when they differ.
 */
export function* reconcileBatched(
  local: MerkleSearchTree,
  remoteRoot: Uint8Array | null,
  opts: { bits?: number; leafBits?: number; firstBudget?: number; leafMax?: number; maxRounds?: number } = {},
): Generator<SendProbes, BatchedResult, Uint8Array[]> {
  const bits = opts.bits ?? DEFAULT_BITS;
  const leafBits = opts.leafBits ?? DEFAULT_LEAF_BITS;
  const leafMax = opts.leafMax ?? DEFAULT_LEAF_MAX;
  const maxRounds = opts.maxRounds ?? MAX_BATCHED_ROUNDS;
  if (!(BITS_MIN <= bits && bits <= BITS_MAX && BITS_MIN <= leafBits && leafBits <= BITS_MAX)) {
    throw new RangeError(`bits and leafBits must be ${BITS_MIN}..${BITS_MAX}`);
  }
  const shift = 32 - bits;
  const pull = new Set<string>();
  const push = new Set<string>();
  const entries = new Map<string, Change>();
  let pending: Ask[] = [];

  const probe = (bounds: Bounds, width?: number): void => {
    const [lo, loIncl, hi] = bounds;
    let mine = local.regionEntries(lo, loIncl, hi, MAX_LEAVES);
    if (mine !== null && mine.length > leafMax) {
      // A node of the lowest level sketches into one slot per entry: no cheaper than
      // the digests, and a round trip more.
      const region = local.region(lo, loIncl, hi);
      if (region.node === null || region.hasChildren()) mine = null;
    }
    if (mine === null) {
      pending.push({ probe: { lo, loIncl, hi, depth: 1, digests: null }, leafBits, paths: [], leaves: [] });
      return;
    }
    const w = width ?? leafBits;
    const leaves = mine.map(([, leaf]) => leaf);
    pending.push({
      probe: { lo, loIncl, hi, depth: 0, digests: leaves.map((l) => leafDigest(l, w)) },
      leafBits: w,
      paths: mine.map(([p]) => p),
      leaves,
    });
  };

  const allEntries = (region: Region): string[] =>
    local.regionEntries(region.lo, region.loIncl, region.hi, Number.MAX_SAFE_INTEGER)!.map(([p]) => p);

  const compare = (node: SketchNode, region: Region): number => {
    const theirs = node.fps;
    if (theirs.length === 1 && theirs[0] === slotDigest32(region.lo, region.loIncl, null, null, region.hi) >>> shift) {
      for (const p of allEntries(region)) push.add(p);
      return 1;
    }
    const ours = regionFps(region, bits);
    const loose = theirs.length !== ours.length ? new Set(theirs) : null;
    let nodes = 1;
    ours.forEach((fp, s) => {
      if ((s < theirs.length && theirs[s] === fp) || (loose !== null && loose.has(fp))) return;
      const sub = region.slotRegion(s);
      const kids = node.children;
      const kid = kids !== null && s < kids.length ? kids[s]! : null;
      if (kid !== null && sub.node !== null) nodes += compare(kid, sub);
      else probe([sub.lo, sub.loIncl, sub.hi]);
    });
    return nodes;
  };

  const splitAt = (region: Region, node: SketchNode, names: string[]): number => {
    const cuts: (string | null)[] = [region.lo, ...names, region.hi];
    node.fps.forEach((fp, s) => {
      const bounds: Bounds = s === 0 ? [region.lo, region.loIncl, cuts[1]!] : [cuts[s]!, true, cuts[s + 1]!];
      if (slotFp32(local.region(...bounds)) >>> shift !== fp) probe(bounds);
    });
    return 1;
  };

  const take = (ask: Ask, result: ProbeResult): number => {
    const p = ask.probe;
    if (result.kind === "deferred") {
      pending.push(ask);
      return 0;
    }
    if (result.kind === "leaves") {
      const unmatched = new Set(result.unmatched);
      const merged = new Map<string, Uint8Array>();
      ask.paths.forEach((path, i) => {
        if (!unmatched.has(i)) merged.set(path, ask.leaves[i]!);
      });
      for (const i of unmatched) push.add(ask.paths[i]!);
      for (const change of result.entries) {
        if (change.value === null) throw new CodecError(`bad postcard: inline entry ${JSON.stringify(change.path)} is a tombstone`);
        pull.add(change.path);
        entries.set(change.path, change);
        merged.set(change.path, leafHash(change));
      }
      for (const path of result.more) pull.add(path);
      if (!result.more.length && leafChecksum(merged.values()) !== result.checksum && ask.leafBits < 32) {
        probe([p.lo, p.loIncl, p.hi], 32); // a short digest matched a differing entry
      }
      return 0;
    }
    const region = local.region(p.lo, p.loIncl, p.hi);
    if (result.names !== null) return splitAt(region, result.node, result.names);
    return compare(result.node, region);
  };

  const requests = (asks: Ask[], budget: number): [ProbeRequest, Ask[]][] => {
    const out: [ProbeRequest, Ask[]][] = [];
    const widths = [...new Set(asks.map((a) => a.leafBits))].sort((a, b) => a - b);
    for (const width of widths) {
      const group = asks
        .filter((a) => a.leafBits === width)
        .sort((a, b) => {
          const x = a.probe.lo;
          const y = b.probe.lo;
          if (x === null || y === null) return (x === null ? 0 : 1) - (y === null ? 0 : 1);
          return compareUtf8(x, y);
        });
      let cur: Ask[] = [];
      let digests = 0;
      let size = 0;
      const flush = (): void => {
        out.push([{ bits, leafBits: width, budget, probes: cur.map((a) => a.probe) }, cur]);
        cur = [];
        digests = 0;
        size = 0;
      };
      for (const ask of group) {
        const n = ask.probe.digests?.length ?? 0;
        const cost = 8 + Math.floor(((ask.probe.lo ?? "").length + (ask.probe.hi ?? "").length) / 2) + Math.ceil((n * width) / 8);
        if (cur.length && (cur.length >= MAX_PROBES || digests + n > MAX_DIGESTS || size + cost > MAX_REQUEST_BYTES)) flush();
        cur.push(ask);
        digests += n;
        size += cost;
      }
      if (cur.length) flush();
    }
    return out;
  };

  let rounds = 0;
  let nodes = 0;
  let nbytes = 0;
  let complete = true;
  let remoteAt = remoteRoot;
  const empty = remoteRoot === null || remoteRoot.every((b) => b === 0);
  if (empty) {
    for (const path of local.paths()) push.add(path);
    remoteAt = null;
  } else if (!bytesEqual(remoteRoot, local.rootHash)) {
    pending.push({ probe: { lo: null, loIncl: false, hi: null, depth: MAX_DEPTH, digests: null }, leafBits, paths: [], leaves: [] });
  }
  let budget = opts.firstBudget ?? DEFAULT_FIRST_BUDGET;
  while (pending.length) {
    if (rounds >= maxRounds) {
      complete = false;
      break;
    }
    const now = pending;
    pending = [];
    const cut = requests(now, budget);
    const answers = yield { requests: cut.map(([req]) => encodeRequest(req)) };
    rounds++;
    budget = MAX_SLOTS;
    if (answers.length !== cut.length) throw new CodecError(`bad postcard: ${answers.length} answers for ${cut.length} requests`);
    cut.forEach(([request, asks], k) => {
      const data = answers[k]!;
      nbytes += data.length;
      const answer = decodeAnswer(data, request);
      remoteAt = answer.root;
      asks.forEach((ask, i) => {
        nodes += take(ask, answer.results[i]!);
      });
    });
  }
  const sorted = (s: Iterable<string>): string[] => [...s].sort(compareUtf8);
  return {
    pull: sorted(pull),
    push: sorted(push),
    rounds,
    nodesFetched: nodes,
    bytesFetched: nbytes,
    complete,
    entries: sorted(entries.keys()).map((p) => entries.get(p)!),
    remoteRoot: remoteAt,
  };
}
