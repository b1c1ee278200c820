/**
 * roomsync-client: the TypeScript client of roomsync (SPEC §1-5). See README.md.
 *
 * The main entry point is {@link connect} / {@link RoomClient}; the codecs, the MST and
 * the replica core are exported too, for tools (inspectors, tests, other shells).
 */

export {
  connect,
  RoomClient,
  TimeoutError,
  wsUrl,
  blobHash,
  PROTOCOL_VERSION,
  type RoomOptions,
  type RoomEvents,
  type Status,
  type ChangeEvent,
  type PresenceEvent,
  type PresenceInfo,
  type BlobInfo,
  type TickInfo,
  type Welcome,
  type ConnectionStats,
  type RetryWait,
  type WebSocketLike,
  type WebSocketConstructor,
  type Logger,
} from "./client.js";
export {
  RoomsyncError,
  CodecError,
  MalformedEnvelope,
  ConnectionClosed,
  ConnectError,
  RequestRefused,
  BlobError,
  BlobRejected,
  BlobNotFound,
  BlobFetchFailed,
  type ErrorEnvelope,
} from "./errors.js";
export {
  encodePack,
  decodePack,
  encodeChange,
  decodeChange,
  encodeLeaf,
  encodeNode,
  decodeNode,
  encodedSize,
  Reader,
  Writer,
  U32_MAX,
  U64_MAX,
  type Change,
  type U64,
  type MstNode,
  type NodeEntry,
} from "./postcard.js";
export {
  clientFrame,
  serverFrame,
  parseClientFrame,
  parseServerFrame,
  inflateRaw,
  MAX_INFLATED_BYTES,
  FLAG_DONE,
  FLAG_DEFLATE,
  TAG_CLIENT_PACK,
  TAG_SERVER_PACK,
  type ServerPackFrame,
} from "./binpack.js";
export { b64encode, b64decode, toHex, fromHex, sha256, compareUtf8, sortUtf8 } from "./bytes.js";
export { MerkleSearchTree, buildRoot, leafHash, level, EMPTY_ROOT_HEX } from "./mst.js";
export {
  reconcile,
  reconcileBatched,
  differing,
  toRequest,
  type ReconcileResult,
  type BatchedResult,
  type FetchNodes,
  type SendProbes,
} from "./reconcile.js";
export { encodeRequest, decodeAnswer, type Probe, type ProbeRequest, type SketchAnswer } from "./sketch.js";
export { wins, compareKeys, sameKey, mergeInto, HybridClock } from "./merge.js";
export {
  Replica,
  type RefusedChange,
  type SupersededChange,
  type Settled,
  type HelloPlan,
  type SyncMode,
} from "./replica.js";
export {
  Backoff,
  ReconnectPolicy,
  closeAction,
  ACTION_ON_CLOSE,
  TERMINAL_CLOSE_CODES,
  ABNORMAL_CLOSURE,
  type CloseAction,
  type Decision,
  type StopReason,
} from "./reconnect.js";
export { validatePath, validatePrefix, prefixMatches, pathError, InvalidPath } from "./paths.js";
