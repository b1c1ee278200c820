import { describe, expect, it } from "vitest";
import { b64decode, compareUtf8, fromHex, sha256, sortUtf8, toHex } from "../src/bytes.js";
import { buildRoot, EMPTY_ROOT_HEX, leafHash, level, MerkleSearchTree } from "../src/mst.js";
import { decodeNode, type Change } from "../src/postcard.js";
import { differing, reconcile } from "../src/reconcile.js";
import { changeFromJson, loadVectors, type ChangeJson } from "./vectors.js";

const mst = loadVectors("mst.json");

describe("MST vectors (vectors/mst.json)", () => {
  for (const set of mst.sets) {
    it(set.name, () => {
      const entries = (set.entries as ChangeJson[]).map(changeFromJson);
      for (const [path, lvl] of Object.entries(set.levels)) expect(level(path)).toBe(lvl);
      for (const c of entries) {
        if (c.value !== null) expect(toHex(leafHash(c))).toBe(set.leaves[c.path]);
      }
      expect(buildRoot(entries)).toBe(set.root);
      const tree = new MerkleSearchTree();
      for (const c of entries) tree.put(c);
      expect(tree.rootHex).toBe(set.root);
      // Every node the vectors list is served by hash, byte for byte.
      for (const node of set.nodes) {
        expect(toHex(sha256(fromHex(node.data)))).toBe(node.hash);
        const served = tree.node(fromHex(node.hash));
        expect(served && toHex(served)).toBe(node.data);
        decodeNode(fromHex(node.data));
      }
      // The same root whatever the history: one at a time into a built tree, in reverse.
      const incremental = new MerkleSearchTree();
      incremental.put({ path: "/zzz-seed", ts: 1, counter: 0, actor: "s", value: new Uint8Array([1]), seq: null });
      void incremental.rootHex;
      for (const c of [...entries].reverse()) incremental.put(c);
      incremental.remove("/zzz-seed");
      expect(incremental.rootHex).toBe(set.root);
    });
  }
});

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function change(path: string, ts: number, value: string | null, actor = "a"): Change {
  return { path, ts, counter: 0, actor, value: value === null ? null : new TextEncoder().encode(value), seq: null };
}

describe("MerkleSearchTree", () => {
  it("is empty with 64 zeros", () => {
    expect(new MerkleSearchTree().rootHex).toBe(EMPTY_ROOT_HEX);
    expect(buildRoot([])).toBe(EMPTY_ROOT_HEX);
  });

  it("matches the reference construction after random puts and removes", () => {
    const random = rng(7);
    const tree = new MerkleSearchTree();
    const state = new Map<string, Change>();
    for (let i = 0; i < 3000; i++) {
      const path = `/k/${Math.floor(random() * 400)}`;
      const c = change(path, i + 1, random() < 0.25 ? null : `v${i}`);
      tree.put(c);
      state.set(path, c);
      if (i % 97 === 0) expect(tree.rootHex).toBe(buildRoot(state.values()));
    }
    expect(tree.rootHex).toBe(buildRoot(state.values()));
    expect(tree.paths()).toEqual(sortUtf8([...state.values()].filter((c) => c.value !== null).map((c) => c.path)));
  });

  it("orders paths by UTF-8 bytes, not UTF-16 units", () => {
    expect(compareUtf8("/Ａ", "/😀")).toBeLessThan(0);
    expect("/Ａ" < "/😀").toBe(false); // what JavaScript's own order would say
    expect(sortUtf8(["/😀", "/Ａ", "/a"])).toEqual(["/a", "/Ａ", "/😀"]);
  });

  it("rangeHash equals the root of the entries strictly between the bounds", () => {
    const entries = Array.from({ length: 300 }, (_, i) => change(`/r/${i}`, i + 1, `x${i}`));
    const tree = new MerkleSearchTree(entries);
    const paths = tree.paths();
    const random = rng(3);
    for (let n = 0; n < 40; n++) {
      const a = paths[Math.floor(random() * paths.length)]!;
      const b = paths[Math.floor(random() * paths.length)]!;
      const [lo, hi] = compareUtf8(a, b) < 0 ? [a, b] : [b, a];
      const inside = entries.filter((c) => compareUtf8(c.path, lo) > 0 && compareUtf8(c.path, hi) < 0);
      const got = tree.rangeHash(lo, hi);
      expect(got === null ? EMPTY_ROOT_HEX : toHex(got)).toBe(buildRoot(inside));
    }
  });
});

describe("reconcile (exact mst-get walk)", () => {
  it("finds exactly the differing paths, fetching only what it cannot skip", () => {
    const random = rng(11);
    const base = Array.from({ length: 2000 }, (_, i) => change(`/d/${i}`, i + 1, `v${i}`));
    const remote = new MerkleSearchTree(base);
    const local = new MerkleSearchTree(base);
    const expected = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const p = `/d/${Math.floor(random() * 2000)}`;
      remote.put(change(p, 10_000 + i, `remote${i}`, "r"));
      expected.add(p);
    }
    local.put(change("/d/only-local", 5, "mine"));
    expected.add("/d/only-local");
    remote.remove("/d/7");
    expected.add("/d/7");
    const flow = reconcile(local, remote.rootHash);
    let step = flow.next();
    let fetched = 0;
    while (!step.done) {
      const reply = new Map<string, Uint8Array>();
      for (const h of step.value.hashes) {
        const data = remote.node(h);
        if (data) reply.set(toHex(h), data);
      }
      fetched += reply.size;
      step = flow.next(reply);
    }
    const result = step.value;
    expect(result.complete).toBe(true);
    expect(new Set(differing(result))).toEqual(expected);
    expect(fetched).toBeLessThan(200);
  });

  it("refuses a node that does not hash to what was asked", () => {
    const remote = new MerkleSearchTree([change("/a", 1, "x"), change("/b", 2, "y")]);
    const local = new MerkleSearchTree();
    const flow = reconcile(local, remote.rootHash);
    const step = flow.next();
    expect(step.done).toBe(false);
    const h = (step.value as { hashes: Uint8Array[] }).hashes[0]!;
    expect(() => flow.next(new Map([[toHex(h), b64decode("AA==")]]))).toThrow(/does not match its hash/);
  });
});
