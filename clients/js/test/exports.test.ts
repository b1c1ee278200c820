import { describe, expect, it } from "vitest";
import * as api from "../src/index.js";

// The curated public API (README.md documents each name): a change here is a change of
// the package's contract, so this list is kept exact on purpose.
const EXPORTED = [
  "ABNORMAL_CLOSURE", "ACTION_ON_CLOSE", "Backoff", "BlobError", "BlobFetchFailed", "BlobNotFound", "BlobRejected",
  "CodecError", "ConnectError", "ConnectionClosed", "EMPTY_ROOT_HEX", "FLAG_DEFLATE", "FLAG_DONE", "HybridClock",
  "InvalidPath", "MAX_INFLATED_BYTES", "MalformedEnvelope", "MerkleSearchTree", "PROTOCOL_VERSION", "Reader",
  "ReconnectPolicy", "Replica", "RequestRefused", "RoomClient", "RoomsyncError", "TAG_CLIENT_PACK", "TAG_SERVER_PACK",
  "TERMINAL_CLOSE_CODES", "TimeoutError", "U32_MAX", "U64_MAX", "Writer", "b64decode", "b64encode", "blobHash",
  "buildRoot", "clientFrame", "closeAction", "compareKeys", "compareUtf8", "connect", "decodeChange", "decodeNode",
  "decodePack", "differing", "encodeChange", "encodeLeaf", "encodeNode", "encodePack", "encodedSize", "fromHex",
  "inflateRaw", "leafHash", "level", "mergeInto", "parseClientFrame", "parseServerFrame", "pathError", "prefixMatches",
  "reconcile", "reconcileBatched", "toRequest", "encodeRequest", "decodeAnswer", "sameKey", "serverFrame", "sha256", "sortUtf8", "toHex", "validatePath", "validatePrefix", "wins",
  "wsUrl",
];

describe("public API", () => {
  it("exports exactly the documented names", () => {
    expect(Object.keys(api).sort()).toEqual([...EXPORTED].sort());
  });

  it("builds WebSocket URLs like the Python SDK", () => {
    expect(api.wsUrl("http://h:1", "r")).toBe("ws://h:1/ws/r");
    expect(api.wsUrl("https://h/base/", "r")).toBe("wss://h/base/ws/r");
    expect(api.wsUrl("ws://h:1/ws/r", "r")).toBe("ws://h:1/ws/r");
    expect(api.wsUrl("http://h:1/ws", "r")).toBe("ws://h:1/ws/r");
    expect(() => api.wsUrl("ftp://h", "r")).toThrow(RangeError);
    expect(() => api.wsUrl("http://h", "bad room")).toThrow(RangeError);
  });

  it("needs a WebSocket constructor where there is no global one", () => {
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    g.WebSocket = undefined;
    try {
      expect(() => new api.RoomClient({ url: "http://127.0.0.1:1", room: "r" })).toThrow(/WebSocket/);
    } finally {
      g.WebSocket = saved;
    }
  });
});
