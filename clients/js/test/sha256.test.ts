import { describe, expect, it } from "vitest";
import { sha256 as reference } from "@noble/hashes/sha2.js";
import { createHash } from "node:crypto";
import { toHex } from "../src/bytes.js";
import { sha256 } from "../src/sha256.js";

describe("sha256 (src/sha256.ts) against @noble/hashes and node:crypto", () => {
  it("agrees on every length up to 4 blocks and on large inputs", () => {
    for (let n = 0; n <= 300; n++) {
      const data = Uint8Array.from({ length: n }, (_, i) => (i * 131 + n * 7) & 0xff);
      expect(toHex(sha256(data))).toBe(toHex(reference(data)));
    }
    const big = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 2654435761) >>> 24);
    expect(toHex(sha256(big))).toBe(createHash("sha256").update(big).digest("hex"));
  });

  it("knows the FIPS 180-4 examples", () => {
    expect(toHex(sha256(new Uint8Array()))).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect(toHex(sha256(new TextEncoder().encode("abc")))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});
