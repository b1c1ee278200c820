import { describe, expect, it } from "vitest";
import { deflateSync } from "fflate";
import { b64decode, b64encode, fromHex, toHex } from "../src/bytes.js";
import { clientFrame, inflateRaw, parseClientFrame, parseServerFrame, serverFrame } from "../src/binpack.js";
import { CodecError, MalformedEnvelope } from "../src/errors.js";
import { decodePack, encodePack } from "../src/postcard.js";
import { changeFromJson, changeToJson, loadVectors, type ChangeJson } from "./vectors.js";

const binary = loadVectors("binary.json");
const envelopes = loadVectors("envelopes.json");

describe("binary pack frames (vectors/binary.json)", () => {
  for (const c of binary.valid) {
    it(`${c.direction} ${c.name}`, () => {
      const payload = fromHex(c.hex);
      const changes = (c.changes as ChangeJson[]).map(changeFromJson);
      if (c.direction === "client") {
        expect(toHex(clientFrame(changes))).toBe(c.hex);
        const pack = parseClientFrame(payload);
        expect(b64encode(pack)).toBe(c.json.data);
        expect(decodePack(pack).map(changeToJson)).toEqual(c.changes);
      } else {
        const frame = parseServerFrame(payload);
        expect(frame.head).toBe(c.head);
        expect(frame.done).toBe(c.done);
        expect(c.json.head).toBe(c.head);
        expect(c.json.done ?? false).toBe(c.done);
        // The frame and its JSON twin carry the same Pack bytes.
        expect(toHex(frame.pack)).toBe(toHex(b64decode(c.json.data)));
        expect(decodePack(frame.pack).map(changeToJson)).toEqual(c.changes);
        if (payload.length > 2 && (payload[1 + varintLength(payload, 1)]! & 2) === 0) {
          expect(toHex(serverFrame(encodePack(changes), c.head, c.done))).toBe(c.hex);
        }
      }
    });
  }

  for (const c of binary.invalid) {
    it(`refuses ${c.direction} ${c.name}`, () => {
      const parse = c.direction === "client" ? parseClientFrame : parseServerFrame;
      let error: unknown;
      try {
        parse(fromHex(c.hex));
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(MalformedEnvelope);
      expect((error as MalformedEnvelope).code).toBe(c.error.code);
      expect((error as Error).message).toContain(c.error.message_contains);
    });
  }

  it("inflates at most the cap and refuses more (decompression bomb)", () => {
    const bomb = deflateSync(new Uint8Array(8 << 20), { level: 9 });
    expect(bomb.length).toBeLessThan(64 * 1024);
    expect(() => inflateRaw(bomb, 1 << 20)).toThrow(/inflates past 1048576 bytes/);
    expect(inflateRaw(bomb, 8 << 20).length).toBe(8 << 20);
  });

  it("refuses a server frame whose deflated Pack is garbage", () => {
    expect(() => parseServerFrame(fromHex("020002ff00ff00"))).toThrow(MalformedEnvelope);
  });
});

describe("pack envelopes (vectors/envelopes.json)", () => {
  for (const c of envelopes.valid.filter((v: { type: string }) => v.type === "pack")) {
    it(`${c.direction} ${c.name}`, () => {
      const changes = (c.changes as ChangeJson[]).map(changeFromJson);
      expect(decodePack(b64decode(c.json.data)).map(changeToJson)).toEqual(c.changes);
      expect(b64encode(encodePack(changes))).toBe(c.json.data);
    });
  }
  for (const c of envelopes.invalid.filter((v: { stage: string }) => v.stage === "unpack")) {
    it(`refuses ${c.name}`, () => {
      let error: unknown;
      try {
        decodePack(b64decode(c.json.data));
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(CodecError);
      expect((error as CodecError).code).toBe(c.error.code);
      if (c.error.message) expect((error as Error).message).toBe(c.error.message);
    });
  }

  it("base64 round-trips every length", () => {
    for (let n = 0; n < 70; n++) {
      const data = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
      const text = b64encode(data);
      expect(text).toBe(Buffer.from(data).toString("base64"));
      expect(toHex(b64decode(text))).toBe(toHex(data));
    }
  });
});

function varintLength(data: Uint8Array, at: number): number {
  let n = 0;
  while (data[at + n]! & 0x80) n++;
  return n + 1;
}
