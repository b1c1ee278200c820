import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "../src/bytes.js";
import { CodecError } from "../src/errors.js";
import { decodeChange, decodeNode, decodePack, encodeChange, encodeLeaf, encodePack, encodedSize } from "../src/postcard.js";
import { changeFromJson, changeToJson, loadVectors, type ChangeJson } from "./vectors.js";

const postcard = loadVectors("postcard.json");

function opChange(op: { Set: string } | { Delete: null }): ChangeJson {
  return { path: "/o", ts: 1, counter: 0, actor: "a", op, seq: null };
}

describe("postcard vectors (vectors/postcard.json)", () => {
  for (const c of postcard.valid) {
    it(`${c.type} ${c.name}`, () => {
      if (c.type === "Pack") {
        const changes = (c.value.changes as ChangeJson[]).map(changeFromJson);
        expect(toHex(encodePack(changes))).toBe(c.hex);
        expect(decodePack(fromHex(c.hex)).map(changeToJson)).toEqual(c.value.changes);
      } else if (c.type === "Change") {
        expect(toHex(encodeChange(changeFromJson(c.value)))).toBe(c.hex);
        expect(changeToJson(decodeChange(fromHex(c.hex)))).toEqual(c.value);
        expect(encodedSize(changeFromJson(c.value))).toBe(c.hex.length / 2);
      } else if (c.type === "Op") {
        // Checked inside the Change 022f6f 01 00 0161 <op> 00, as the Python test does.
        const hex = `022f6f01000161${c.hex}00`;
        expect(toHex(encodeChange(changeFromJson(opChange(c.value))))).toBe(hex);
        expect(changeToJson(decodeChange(fromHex(hex)))).toEqual(opChange(c.value));
      } else if (c.type === "Leaf") {
        const v = c.value;
        const leaf = encodeLeaf({ path: v.path, ts: v.ts, counter: v.counter, actor: v.actor, value: fromHex(v.value), seq: null });
        expect(toHex(leaf)).toBe(c.hex);
      } else {
        throw new Error(`unknown vector type ${c.type}`);
      }
    });
  }

  for (const c of postcard.invalid) {
    it(`refuses ${c.type} ${c.name}`, () => {
      const decode = c.type === "Node" ? decodeNode : decodePack;
      let error: unknown;
      try {
        decode(fromHex(c.hex));
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(CodecError);
      expect((error as CodecError).code).toBe("malformed-pack");
      expect((error as CodecError).message).toBe(c.error);
    });
  }
});

describe("postcard round trips", () => {
  it("keeps u64 values past 2^53 as bigints", () => {
    const change = { path: "/m", ts: 2n ** 64n - 1n, counter: 0xffffffff, actor: "", value: null, seq: 2n ** 60n };
    const back = decodeChange(encodeChange(change));
    expect(back.ts).toBe(2n ** 64n - 1n);
    expect(back.seq).toBe(2n ** 60n);
    expect(back.counter).toBe(0xffffffff);
  });

  it("encodes non-ASCII paths and values by UTF-8 bytes", () => {
    const value = new TextEncoder().encode('"é😀"');
    const change = { path: "/notes/é/😀", ts: 1700000000000, counter: 3, actor: "zoë", value, seq: 12345 };
    const back = decodePack(encodePack([change]));
    expect(back).toHaveLength(1);
    expect(back[0]!.path).toBe(change.path);
    expect(back[0]!.actor).toBe("zoë");
    expect(toHex(back[0]!.value!)).toBe(toHex(value));
    expect(encodedSize(change)).toBe(encodePack([change]).length - 1);
  });

  it("refuses to encode out-of-range integers", () => {
    expect(() => encodePack([{ path: "/a", ts: -1, counter: 0, actor: "a", value: null, seq: null }])).toThrow(RangeError);
    expect(() => encodePack([{ path: "/a", ts: 1, counter: 2 ** 32, actor: "a", value: null, seq: null }])).toThrow(RangeError);
    expect(() => encodePack([{ path: "/a", ts: 2n ** 64n, counter: 0, actor: "a", value: null, seq: null }])).toThrow(RangeError);
  });
});
