/**
 * Errors the client reports. Each carries the SPEC error `code` it stands for
 * (`malformed-pack`, `malformed-envelope`, ...) and, for closes, the WebSocket close code.
 *
 * ```
 * RoomsyncError
 * ├── CodecError            malformed-pack: bad base64 / bad postcard (a pack that does not decode)
 * ├── MalformedEnvelope     malformed-envelope: a frame that is not a roomsync frame
 * ├── ConnectionClosed      the client stopped for good (4003, 4004, 1002, 4002 without a
 * │   │                     token provider, reconnect off, or close() by the app)
 * │   └── ConnectError      no first session opened within connectTimeoutMs
 * ├── RequestRefused        the server answered a request with `error`; the session goes on
 * └── BlobError             a blob operation failed; the session goes on
 *     ├── BlobRejected      putBlob: nothing was stored
 *     ├── BlobNotFound      getBlob: the room has no such blob
 *     └── BlobFetchFailed   getBlob: no bytes, or bytes that do not match the hash/size
 * ```
 */

export class RoomsyncError extends Error {
  /** The SPEC error code (`error{code}`) this error stands for. */
  code: string;
  constructor(message: string, code: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A pack's data is `bad base64…` or `bad postcard: …` (SPEC §2 `malformed-pack`). */
export class CodecError extends RoomsyncError {
  constructor(message: string) {
    super(message, "malformed-pack");
  }
}

/** A frame that is not a valid roomsync frame (SPEC §2 `malformed-envelope`). */
export class MalformedEnvelope extends RoomsyncError {
  constructor(message: string) {
    super(message, "malformed-envelope");
  }
}

/** The server's `error` envelope, as it came. */
export interface ErrorEnvelope {
  type?: "error";
  code: string;
  message: string;
  ref?: string;
  hash?: string;
  retry_after_ms?: number;
  reason?: string;
  [extra: string]: unknown;
}

/**
 * The client stopped for good and will not reconnect. `closeCode` is the WebSocket close
 * code (1006 when the connection dropped without one), `error` the server's last `error`
 * envelope before the close, `code` its error code (`internal` when none).
 */
export class ConnectionClosed extends RoomsyncError {
  closeCode: number;
  error: ErrorEnvelope | null;
  constructor(closeCode: number, error: ErrorEnvelope | null = null, message?: string) {
    const detail = error ? `: ${error.code}: ${error.message}` : "";
    super(
      message ?? `connection closed with code ${closeCode}${detail}`,
      error?.code ?? (closeCode === 1000 ? "closed" : "internal"),
    );
    this.closeCode = closeCode;
    this.error = error;
  }
}

/** No session opened within `connectTimeoutMs` (or at the first failure with `reconnect: false`). */
export class ConnectError extends ConnectionClosed {
  url: string;
  cause_: string;
  attempts: number;
  constructor(
    url: string,
    cause: string,
    attempts: number,
    closeCode = 1006,
    error: ErrorEnvelope | null = null,
  ) {
    const tries = attempts === 1 ? "1 attempt" : `${attempts} attempts`;
    super(closeCode, error, `cannot connect to ${url}: ${cause} (${tries})`);
    this.url = url;
    this.cause_ = cause;
    this.attempts = attempts;
  }
}

/** The server answered a request (`subscribe`, `mst-root`, `request`…) with an `error`. */
export class RequestRefused extends RoomsyncError {
  error: ErrorEnvelope;
  constructor(error: ErrorEnvelope) {
    super(`${error.code}: ${error.message}`, error.code);
    this.error = error;
  }
}

/** A blob operation failed; `hash` is `sha256:<hex>`, `reason` why. */
export class BlobError extends RoomsyncError {
  hash: string;
  reason: string;
  constructor(hash: string, reason: string, message?: string, code = "internal") {
    super(message ?? `blob ${hash}: ${reason}`, code);
    this.hash = hash;
    this.reason = reason;
  }
}

export class BlobRejected extends BlobError {
  constructor(hash: string, reason: string) {
    super(
      hash,
      reason,
      `blob ${hash} rejected: ${reason}`,
      reason.startsWith("too-large") ? "too-large" : reason.split(":")[0] || "internal",
    );
  }
}

export class BlobNotFound extends BlobError {
  constructor(hash: string, reason: string) {
    super(hash, reason, undefined, "not-found");
  }
}

export class BlobFetchFailed extends BlobError {
  constructor(hash: string, reason: string) {
    super(hash, reason, undefined, "internal");
  }
}
