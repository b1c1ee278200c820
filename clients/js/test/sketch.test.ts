import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "../src/bytes.js";
import { MerkleSearchTree } from "../src/mst.js";
import type { Change } from "../src/postcard.js";
import { decodeAnswer, encodeRequest, packInts, slotDigest32, unpackInts, type ProbeRequest, type ProbeResult, type SketchNode } from "../src/sketch.js";
import { loadVectors } from "./vectors.js";

const sketch = loadVectors("sketch.json");

interface EntryJson {
  path: string;
  ts: number;
  counter: number;
  actor: string;
  value: string | null;
  seq: number | null;
}

const entry = (e: EntryJson): Change => ({ path: e.path, ts: e.ts, counter: e.counter, actor: e.actor, value: e.value === null ? null : fromHex(e.value), seq: e.seq });

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function requestOf(r: any): ProbeRequest {
  return {
    bits: r.bits,
    leafBits: r.leaf_bits,
    budget: r.budget,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    probes: r.probes.map((p: any) => ({ lo: p.lo, loIncl: p.lo_incl, hi: p.hi, depth: p.depth ?? 0, digests: p.digests ?? null })),
  };
}

function nodeJson(n: SketchNode): unknown {
  return n.children === null ? { fps: n.fps } : { fps: n.fps, children: n.children.map((c) => (c === null ? null : nodeJson(c))) };
}

function resultJson(r: ProbeResult): unknown {
  if (r.kind === "deferred") return { deferred: true };
  if (r.kind === "sketch") return r.names === null ? { sketch: nodeJson(r.node) } : { sketch: nodeJson(r.node), names: r.names };
  return {
    unmatched: r.unmatched,
    checksum: r.checksum,
    entries: r.entries.map((c) => ({ path: c.path, ts: c.ts, counter: c.counter, actor: c.actor, value: c.value && toHex(c.value), seq: c.seq })),
    more: r.more,
  };
}

describe("batched reconcile vectors (vectors/sketch.json)", () => {
  it("the entries' tree has the vectors' root", () => {
    expect(new MerkleSearchTree(sketch.entries.map(entry)).rootHex).toBe(sketch.root);
  });

  for (const s of sketch.slots) {
    it(`slot fingerprint ${s.name}`, () => {
      expect(slotDigest32(s.lo, s.lo_incl, s.leaf && fromHex(s.leaf), s.child && fromHex(s.child), s.hi)).toBe(s.fp32);
    });
  }

  it("slot fingerprints of a region of the tree equal the vectors'", () => {
    const tree = new MerkleSearchTree(sketch.entries.map(entry));
    const s = sketch.slots.find((x: { name: string }) => x.name === "bounded-with-leaf");
    const region = tree.region(s.lo, s.lo_incl, s.hi);
    expect(toHex(region.lower!)).toBe(s.leaf);
    expect(toHex(region.childHash()!)).toBe(s.child);
  });

  for (const r of sketch.requests) {
    it(`request and answer ${r.name}`, () => {
      const request = requestOf(r.request);
      expect(toHex(encodeRequest(request))).toBe(r.request_hex);
      const answer = decodeAnswer(fromHex(r.answer_hex), request);
      expect(answer.root && toHex(answer.root)).toBe(r.answer.root);
      expect(answer.results.map(resultJson)).toEqual(r.answer.results);
    });
  }

  it("packs bit fields big-endian, padded with zeros", () => {
    const values = [27, 61, 55, 8, 62, 0, 61];
    for (const bits of [4, 6, 7, 20, 32]) {
      const vs = values.map((v) => v % 2 ** bits);
      expect(unpackInts(packInts(vs, bits), vs.length, bits)).toEqual(vs);
    }
    expect(toHex(packInts([0xf, 0x1], 4))).toBe("f1");
    expect(toHex(packInts([0xffffffff], 32))).toBe("ffffffff");
  });

  it("refuses an answer that does not fit its request", () => {
    const r = sketch.requests[0];
    const request = requestOf(r.request);
    const data = fromHex(r.answer_hex);
    expect(() => decodeAnswer(data.subarray(0, data.length - 1), request)).toThrow(/bad postcard/);
    expect(() => decodeAnswer(data, { ...request, probes: [...request.probes, ...request.probes] })).toThrow(/results for 2 probes/);
  });
});
