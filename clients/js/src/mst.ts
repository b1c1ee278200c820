/**
 * The Merkle Search Tree over a room's live entries: the canonical hash of SPEC §1.
 *
 * ```
 * leaf(e)  = SHA-256(postcard Leaf{path, ts, counter, actor, value})
 * level(k) = number of leading zero 4-bit digits of SHA-256(utf8 path k)
 * build(S) = Node{left, entries}: the entries of S at its highest level L split S into
 *            G0, e1, G1, …, em, Gm; left = hash(build(G0)), entry i = (path, leaf,
 *            hash(build(Gi))), None for an empty group
 * root     = hex(SHA-256(postcard(build(all live)))), or 64 zeros when empty
 * ```
 *
 * {@link buildRoot} is the literal construction; {@link MerkleSearchTree} keeps the same
 * tree up to date one change at a time (a port of `roomsync.core.mst`): `put` edits the
 * shape and marks nodes dirty, and hashes are recomputed lazily, only for dirty nodes,
 * when {@link MerkleSearchTree.rootHash} is read. Puts into an empty tree (a full
 * catch-up) defer the shape to the first read, which builds it in one pass.
 * Paths are ordered by UTF-8 bytes ({@link compareUtf8}), never by UTF-16 code units.
 */

import { compareUtf8, sha256, sortUtf8, toHex } from "./bytes.js";
import { encodeNode, scratch, writeLeaf, type Change, type NodeEntry } from "./postcard.js";

export const EMPTY_ROOT_HEX = "0".repeat(64);
const DEFAULT_RETAIN_ROOTS = 4;

/** `SHA-256(postcard Leaf)` of a live change. */
export function leafHash(change: Change): Uint8Array {
  writeLeaf(scratch.reset(), change);
  return sha256(scratch.view());
}

/** The MST level of `path`: leading zero hex digits of `SHA-256(utf8 path)`. */
export function level(path: string): number {
  scratch.reset().utf8(path);
  const d = sha256(scratch.view());
  let n = 0;
  for (let i = 0; i < 32; i++) {
    const b = d[i]!;
    if (b === 0) {
      n += 2;
      continue;
    }
    if (b < 0x10) n += 1;
    break;
  }
  return n;
}

/** The canonical root (hex) of the live entries of `entries` (one per path): SPEC §1 verbatim. */
export function buildRoot(entries: Iterable<Change>): string {
  const byPath = new Map<string, Change>();
  for (const c of entries) {
    if (c.value === null) continue;
    if (byPath.has(c.path)) throw new Error(`duplicate live path ${JSON.stringify(c.path)}`);
    byPath.set(c.path, c);
  }
  const keys = sortUtf8([...byPath.keys()]);
  if (keys.length === 0) return EMPTY_ROOT_HEX;
  const live = keys.map((k) => byPath.get(k)!);
  const levels = keys.map(level);
  const build = (lo: number, hi: number): Uint8Array | null => {
    if (lo === hi) return null;
    let top = 0;
    for (let i = lo; i < hi; i++) top = Math.max(top, levels[i]!);
    const splits: number[] = [];
    for (let i = lo; i < hi; i++) if (levels[i] === top) splits.push(i);
    const left = build(lo, splits[0]!);
    const nodeEntries: NodeEntry[] = splits.map((i, n) => ({
      path: live[i]!.path,
      leaf: leafHash(live[i]!),
      right: build(i + 1, n + 1 < splits.length ? splits[n + 1]! : hi),
    }));
    return sha256(encodeNode(left, nodeEntries));
  };
  return toHex(build(0, live.length)!);
}

/** First index whose key is >= key. */
function bisectLeft(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareUtf8(keys[mid]!, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose key is > key. */
function bisectRight(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareUtf8(key, keys[mid]!) < 0) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

class TreeNode {
  hash: Uint8Array | null = null;
  constructor(
    public level: number,
    public keys: string[],
    public changes: Change[],
    public leaves: (Uint8Array | null)[],
    public children: (TreeNode | null)[],
  ) {}
}

/** A node of `build(S ∩ (lo, hi))` that is not a node of the tree (re-cut at the bounds). */
class VirtualNode {
  private cached: Uint8Array | null = null;
  constructor(
    public keys: string[],
    public leaves: Uint8Array[],
    public children: (TreeNode | VirtualNode | null)[],
  ) {}
  get hash(): Uint8Array {
    if (this.cached === null) {
      const entries = this.keys.map((path, k) => ({
        path,
        leaf: this.leaves[k]!,
        right: viewHash(this.children[k + 1]!),
      }));
      this.cached = sha256(encodeNode(viewHash(this.children[0]!), entries));
    }
    return this.cached;
  }
}

type View = TreeNode | VirtualNode;

function viewHash(view: View | null): Uint8Array | null {
  if (view === null) return null;
  const h = view.hash;
  if (h === null) throw new Error("views are taken of hashed trees only");
  return h;
}

/** The MST of a room's live entries, kept up to date one change at a time. */
export class MerkleSearchTree {
  private entries = new Map<string, Change>();
  private levels = new Map<string, number>();
  private live = new Map<string, Uint8Array>();
  private pending = new Map<string, Uint8Array>();
  private retired: Map<string, Uint8Array>[] = [];
  private root: TreeNode | null = null;
  private stale = false;
  private readonly retainRoots: number;

  constructor(entries: Iterable<Change> = [], retainRoots = DEFAULT_RETAIN_ROOTS) {
    this.retainRoots = retainRoots;
    for (const c of entries) {
      if (c.value === null) this.entries.delete(c.path);
      else this.entries.set(c.path, c);
    }
    this.stale = this.entries.size > 0;
  }

  /** Number of live entries. */
  get count(): number {
    return this.entries.size;
  }

  get(path: string): Change | undefined {
    return this.entries.get(path);
  }

  has(path: string): boolean {
    return this.entries.has(path);
  }

  /** All live paths, sorted by UTF-8 bytes. */
  paths(): string[] {
    return sortUtf8([...this.entries.keys()]);
  }

  /** Hash of the root node (null when empty); re-hashes only dirty nodes. */
  get rootHash(): Uint8Array | null {
    return this.flush();
  }

  /** The canonical hash of SPEC §1: hex root, or 64 zeros when empty. */
  get rootHex(): string {
    const h = this.rootHash;
    return h === null ? EMPTY_ROOT_HEX : toHex(h);
  }

  /** Postcard Node bytes of a node of this tree (or of one of the last retained roots). */
  node(h: Uint8Array): Uint8Array | undefined {
    const key = toHex(h);
    let data = this.live.get(key) ?? this.pending.get(key);
    if (data === undefined) {
      for (let i = this.retired.length - 1; i >= 0 && data === undefined; i--) data = this.retired[i]!.get(key);
    }
    return data;
  }

  /** The leaf hash of `path` in the current tree, or null when it is not live. */
  leaf(path: string): Uint8Array | null {
    if (!this.entries.has(path)) return null;
    let t = this.shape();
    while (t !== null) {
      const i = bisectLeft(t.keys, path);
      if (i < t.keys.length && t.keys[i] === path) {
        let leaf = t.leaves[i];
        if (!leaf) leaf = t.leaves[i] = leafHash(t.changes[i]!);
        return leaf;
      }
      t = t.children[i]!;
    }
    throw new Error(`${path} is live but not in the tree`);
  }

  /** Live paths strictly between `lo` and `hi` (null: unbounded), sorted. */
  pathsBetween(lo: string | null, hi: string | null): string[] {
    const out: string[] = [];
    if (lo !== null && hi !== null && compareUtf8(lo, hi) >= 0) return out;
    collect(this.shape(), lo, hi, out);
    return out;
  }

  /** `hash(build(live paths strictly between lo and hi))`, null when that is empty. */
  rangeHash(lo: string | null, hi: string | null): Uint8Array | null {
    if (lo !== null && hi !== null && compareUtf8(lo, hi) >= 0) return null;
    this.flush();
    return viewHash(openView(this.root, lo, hi, null, null));
  }

  /**
   * The canonical structure of the key region `[lo, hi)` (`(lo, hi)` unless `loIncl`;
   * null: unbounded), for batched reconcile: its node is that of `build(live paths
   * strictly between lo and hi)`.
   */
  region(lo: string | null, loIncl: boolean, hi: string | null): Region {
    this.flush();
    if (lo !== null && hi !== null && compareUtf8(lo, hi) >= 0) return new Region(lo, loIncl, null, null, hi);
    const lower = loIncl && lo !== null ? this.leaf(lo) : null;
    return new Region(lo, loIncl, lower, openView(this.root, lo, hi, null, null), hi);
  }

  /** `[path, leaf, change]` of the live entries of region `[lo, hi)`, sorted; null past `limit`. */
  regionEntries(lo: string | null, loIncl: boolean, hi: string | null, limit: number): [string, Uint8Array, Change][] | null {
    const out: [string, Uint8Array, Change][] = [];
    if (lo !== null && hi !== null && compareUtf8(lo, hi) >= 0) return out;
    this.flush();
    if (loIncl && lo !== null) {
      const change = this.entries.get(lo);
      if (change !== undefined && (hi === null || compareUtf8(lo, hi) < 0)) out.push([lo, this.leaf(lo)!, change]);
    }
    if (!collectEntries(this.root, lo, hi, out, limit)) return null;
    return out;
  }

  /** Mirror an applied change: live inserts or replaces its path, a tombstone removes it. */
  put(change: Change): void {
    const path = change.path;
    if (change.value === null) {
      this.remove(path);
      return;
    }
    if (this.stale || this.root === null) {
      this.entries.set(path, change);
      this.stale = true;
      return;
    }
    const old = this.entries.get(path);
    this.entries.set(path, change);
    if (
      old !== undefined &&
      old.ts == change.ts &&
      old.counter === change.counter &&
      old.actor === change.actor &&
      sameBytes(old.value, change.value)
    ) {
      return;
    }
    this.root = this.insert(this.root, path, change, this.levelOf(path), old !== undefined);
  }

  /** Remove `path` if it is live (no-op otherwise). */
  remove(path: string): void {
    if (!this.entries.delete(path) || this.stale) return;
    this.root = this.removeFrom(this.root, path, this.levelOf(path));
  }

  private levelOf(path: string): number {
    let l = this.levels.get(path);
    if (l === undefined) {
      l = level(path);
      this.levels.set(path, l);
    }
    return l;
  }

  private shape(): TreeNode | null {
    if (this.stale) {
      this.stale = false;
      const keys = sortUtf8([...this.entries.keys()]);
      const changes = keys.map((k) => this.entries.get(k)!);
      const levels = keys.map((k) => this.levelOf(k));
      this.root = bulk(keys, changes, levels);
    }
    return this.root;
  }

  private flush(): Uint8Array | null {
    const root = this.shape();
    if (root === null) {
      this.publish();
      return null;
    }
    if (root.hash === null) {
      this.rehash(root);
      this.publish();
    }
    return root.hash;
  }

  private touch(t: TreeNode): void {
    const h = t.hash;
    if (h !== null) {
      t.hash = null;
      const key = toHex(h);
      const data = this.live.get(key);
      if (data !== undefined) {
        this.live.delete(key);
        this.pending.set(key, data);
      }
    }
  }

  private publish(): void {
    if (this.pending.size) {
      if (this.retainRoots > 0) {
        this.retired.push(this.pending);
        if (this.retired.length > this.retainRoots) this.retired.shift();
      }
      this.pending = new Map();
    }
  }

  private rehash(t: TreeNode): Uint8Array {
    const left = t.children[0]!;
    const leftHash = left === null ? null : (left.hash ?? this.rehash(left));
    const entries: NodeEntry[] = new Array(t.keys.length);
    for (let i = 0; i < t.keys.length; i++) {
      let leaf = t.leaves[i];
      if (!leaf) leaf = t.leaves[i] = leafHash(t.changes[i]!);
      const right = t.children[i + 1]!;
      entries[i] = { path: t.keys[i]!, leaf, right: right === null ? null : (right.hash ?? this.rehash(right)) };
    }
    const data = encodeNode(leftHash, entries);
    const h = sha256(data);
    t.hash = h;
    this.live.set(toHex(h), data);
    return h;
  }

  private insert(t: TreeNode | null, key: string, change: Change, lvl: number, present: boolean): TreeNode {
    if (t === null) return new TreeNode(lvl, [key], [change], [null], [null, null]);
    if (t.level < lvl) {
      const [left, right] = this.split(t, key);
      return new TreeNode(lvl, [key], [change], [null], [left, right]);
    }
    this.touch(t);
    const i = bisectLeft(t.keys, key);
    if (t.level === lvl) {
      if (present) {
        t.changes[i] = change;
        t.leaves[i] = null;
        return t;
      }
      const [left, right] = this.split(t.children[i]!, key);
      t.keys.splice(i, 0, key);
      t.changes.splice(i, 0, change);
      t.leaves.splice(i, 0, null);
      t.children.splice(i, 1, left, right);
      return t;
    }
    t.children[i] = this.insert(t.children[i]!, key, change, lvl, present);
    return t;
  }

  private split(t: TreeNode | null, key: string): [TreeNode | null, TreeNode | null] {
    if (t === null) return [null, null];
    this.touch(t);
    const keys = t.keys;
    const i = bisectLeft(keys, key);
    const [below, above] = this.split(t.children[i]!, key);
    if (i === 0) {
      t.children[0] = above;
      return [below, t];
    }
    if (i === keys.length) {
      t.children[i] = below;
      return [t, above];
    }
    const left = new TreeNode(t.level, keys.slice(0, i), t.changes.slice(0, i), t.leaves.slice(0, i), [
      ...t.children.slice(0, i),
      below,
    ]);
    keys.splice(0, i);
    t.changes.splice(0, i);
    t.leaves.splice(0, i);
    t.children.splice(0, i + 1, above);
    return [left, t];
  }

  private removeFrom(t: TreeNode | null, key: string, lvl: number): TreeNode | null {
    if (t === null) throw new Error("a live path is always in the tree");
    this.touch(t);
    const i = bisectLeft(t.keys, key);
    if (t.level > lvl) {
      t.children[i] = this.removeFrom(t.children[i]!, key, lvl);
      return t;
    }
    const merged = this.merge(t.children[i]!, t.children[i + 1]!);
    t.keys.splice(i, 1);
    t.changes.splice(i, 1);
    t.leaves.splice(i, 1);
    t.children.splice(i, 2, merged);
    return t.keys.length ? t : merged;
  }

  private merge(a: TreeNode | null, b: TreeNode | null): TreeNode | null {
    if (a === null) return b;
    if (b === null) return a;
    if (a.level > b.level) {
      this.touch(a);
      a.children[a.children.length - 1] = this.merge(a.children[a.children.length - 1]!, b);
      return a;
    }
    if (a.level < b.level) {
      this.touch(b);
      b.children[0] = this.merge(a, b.children[0]!);
      return b;
    }
    this.touch(a);
    this.touch(b);
    const middle = this.merge(a.children[a.children.length - 1]!, b.children[0]!);
    a.keys.push(...b.keys);
    a.changes.push(...b.changes);
    a.leaves.push(...b.leaves);
    a.children.splice(a.children.length - 1, 1, middle, ...b.children.slice(1));
    return a;
  }
}

function sameBytes(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === b) return true;
  if (a === null || b === null || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function bulk(keys: string[], changes: Change[], levels: number[]): TreeNode | null {
  const build = (lo: number, hi: number): TreeNode | null => {
    if (lo === hi) return null;
    let top = 0;
    for (let i = lo; i < hi; i++) if (levels[i]! > top) top = levels[i]!;
    if (top === 0) {
      const n = hi - lo;
      return new TreeNode(0, keys.slice(lo, hi), changes.slice(lo, hi), new Array(n).fill(null), new Array(n + 1).fill(null));
    }
    const splits: number[] = [];
    for (let i = lo; i < hi; i++) if (levels[i] === top) splits.push(i);
    const children: (TreeNode | null)[] = [build(lo, splits[0]!)];
    splits.forEach((i, n) => children.push(build(i + 1, n + 1 < splits.length ? splits[n + 1]! : hi)));
    return new TreeNode(
      top,
      splits.map((i) => keys[i]!),
      splits.map((i) => changes[i]!),
      new Array(splits.length).fill(null),
      children,
    );
  };
  return build(0, keys.length);
}

function collect(t: TreeNode | null, lo: string | null, hi: string | null, out: string[]): void {
  if (t === null) return;
  const keys = t.keys;
  const i = lo === null ? 0 : bisectRight(keys, lo);
  const j = hi === null ? keys.length : bisectLeft(keys, hi);
  collect(t.children[i]!, lo, hi, out);
  for (let k = i; k < j; k++) {
    out.push(keys[k]!);
    collect(t.children[k + 1]!, lo, hi, out);
  }
}

/**
 * A key region `[lo, hi)` of one tree with its canonical node (see `region()`). Its slots
 * split it: slot 0 is `[lo, e1)`, slot i is `[ei, ei+1)` (the last ends at `hi`), where
 * `e1 < e2 < …` are the node's entries; each slot is a region whose node is the child
 * between its bounds. An empty open part has one slot, the whole region.
 */
export class Region {
  constructor(
    readonly lo: string | null,
    readonly loIncl: boolean,
    /** The leaf of `lo` when the region includes it and it is live. */
    readonly lower: Uint8Array | null,
    readonly node: TreeNode | VirtualNode | null,
    readonly hi: string | null,
  ) {}

  get slotCount(): number {
    return this.node === null ? 1 : this.node.keys.length + 1;
  }

  slotRegion(s: number): Region {
    const node = this.node;
    if (node === null) {
      if (s !== 0) throw new RangeError(String(s));
      return this;
    }
    const keys = node.keys;
    const hi = s < keys.length ? keys[s]! : this.hi;
    const child = node.children[s]!;
    if (s === 0) return new Region(this.lo, this.loIncl, this.lower, child, hi);
    return new Region(keys[s - 1]!, true, node.leaves[s - 1]!, child, hi);
  }

  slotHasChild(s: number): boolean {
    return this.node !== null && this.node.children[s] !== null;
  }

  /** Hash of the node of the open part (null when it is empty). */
  childHash(): Uint8Array | null {
    return viewHash(this.node);
  }

  /** True when the node has children (it is not of the lowest level). */
  hasChildren(): boolean {
    return this.node !== null && this.node.children.some((c) => c !== null);
  }
}

function collectEntries(
  t: TreeNode | null,
  lo: string | null,
  hi: string | null,
  out: [string, Uint8Array, Change][],
  limit: number,
): boolean {
  if (t === null) return true;
  const keys = t.keys;
  const i = lo === null ? 0 : bisectRight(keys, lo);
  const j = hi === null ? keys.length : bisectLeft(keys, hi);
  if (!collectEntries(t.children[i]!, lo, hi, out, limit)) return false;
  for (let k = i; k < j; k++) {
    out.push([keys[k]!, t.leaves[k]!, t.changes[k]!]);
    if (out.length > limit) return false;
    if (!collectEntries(t.children[k + 1]!, lo, hi, out, limit)) return false;
  }
  return true;
}

function openView(
  t: TreeNode | null,
  lo: string | null,
  hi: string | null,
  tlo: string | null,
  thi: string | null,
): View | null {
  while (t !== null) {
    if (
      (lo === null || (tlo !== null && compareUtf8(tlo, lo) >= 0)) &&
      (hi === null || (thi !== null && compareUtf8(thi, hi) <= 0))
    ) {
      return t;
    }
    const keys = t.keys;
    const i = lo === null ? 0 : bisectRight(keys, lo);
    const j = hi === null ? keys.length : bisectLeft(keys, hi);
    if (i >= j) {
      if (i > 0) tlo = keys[i - 1]!;
      if (i < keys.length) thi = keys[i]!;
      t = t.children[i]!;
      continue;
    }
    const children = t.children;
    const leaves = t.leaves.slice(i, j) as Uint8Array[];
    const kids: (View | null)[] = [openView(children[i]!, lo, hi, i > 0 ? keys[i - 1]! : tlo, keys[i]!)];
    for (let k = i + 1; k < j; k++) kids.push(children[k]!);
    kids.push(openView(children[j]!, lo, hi, keys[j - 1]!, j < keys.length ? keys[j]! : thi));
    return new VirtualNode(keys.slice(i, j), leaves, kids);
  }
  return null;
}

