/**
 * What the client does when its connection ends (SPEC §2 close codes), sans I/O: a port
 * of `roomsync.core.reconnect`.
 *
 * | close | action |
 * |---|---|
 * | 1000, 1006, 1009, 1011, 1012, 4008, others | retry after a jittered backoff (at least an `overload` error's `retry_after_ms`) |
 * | 4001 | resync: reconnect at once, full resync (MST reconcile, else full state) |
 * | 4002 | refresh the token (token provider), reconnect at once; stop without a provider |
 * | 1002, 4003, 4004 | stop: surface the error |
 *
 * Retry number `n` (0 for the first since the last welcome) waits a delay in
 * `[cap/2, cap]` with `cap = min(max, base * factor^n)` ("equal jitter").
 */

export const ABNORMAL_CLOSURE = 1006;

export type CloseAction = "retry" | "resync" | "refresh-token" | "stop";

export const ACTION_ON_CLOSE: Readonly<Record<number, CloseAction>> = Object.freeze({
  1000: "retry",
  1002: "stop",
  1006: "retry",
  1009: "retry",
  1011: "retry",
  1012: "retry",
  4001: "resync",
  4002: "refresh-token",
  4003: "stop",
  4004: "stop",
  4008: "retry",
});

export const TERMINAL_CLOSE_CODES: readonly number[] = Object.freeze([1002, 4003, 4004]);

export function closeAction(code: number): CloseAction {
  return ACTION_ON_CLOSE[code] ?? "retry";
}

/** Backoff in seconds, as the Python SDK's `Backoff(base=0.1, factor=2, max=10)`. */
export class Backoff {
  readonly base: number;
  readonly factor: number;
  readonly max: number;
  constructor(opts: { base?: number; factor?: number; max?: number } = {}) {
    this.base = opts.base ?? 0.1;
    this.factor = opts.factor ?? 2;
    this.max = opts.max ?? 10;
    if (this.base < 0 || this.max < 0 || this.factor < 1) {
      throw new RangeError("Backoff needs base >= 0, max >= 0 and factor >= 1");
    }
  }
  /** The largest delay (s) for retry number `attempt` (0 for the first retry). */
  cap(attempt: number): number {
    if (this.base === 0) return 0;
    return Math.min(this.max, this.base * this.factor ** Math.min(attempt, 64));
  }
  /** Seconds to wait before retry number `attempt`, `u` a random float in [0, 1). */
  jittered(attempt: number, u: number): number {
    if (!(u >= 0 && u < 1)) throw new RangeError(`u must be in [0, 1), got ${u}`);
    const cap = this.cap(attempt);
    return cap / 2 + (u * cap) / 2;
  }
}

export type StopReason = "terminal" | "no-token-provider" | "reconnect-off";

export interface Decision {
  action: CloseAction;
  stop: StopReason | null;
  /** Seconds to wait before the next attempt. */
  delay: number;
  /** The retry number (1 for the first since the last welcome). */
  attempt: number;
  retryAfterMs: number | null;
}

/** Decides, after every close, whether and when to reconnect. */
export class ReconnectPolicy {
  failures = 0;
  constructor(
    readonly backoff: Backoff = new Backoff(),
    readonly reconnect = true,
    readonly canRefreshToken = false,
  ) {}

  afterClose(
    closeCode: number,
    opts: { welcomed: boolean; random: () => number; errorCode?: string | null; retryAfterMs?: number | null },
  ): Decision {
    if (opts.welcomed) this.failures = 0;
    const action = closeAction(closeCode);
    const base = { action, delay: 0, attempt: this.failures, retryAfterMs: null };
    if (action === "stop") return { ...base, stop: "terminal" };
    if (action === "refresh-token" && !this.canRefreshToken) return { ...base, stop: "no-token-provider" };
    if (!this.reconnect) return { ...base, stop: "reconnect-off" };
    const hint = opts.errorCode === "overload" ? (opts.retryAfterMs ?? null) : null;
    const immediate = (action === "resync" || action === "refresh-token") && this.failures === 0;
    let delay = immediate ? 0 : this.backoff.jittered(this.failures, opts.random());
    if (hint !== null) delay = Math.max(delay, hint / 1000);
    this.failures += 1;
    return { action, stop: null, delay, attempt: this.failures, retryAfterMs: hint };
  }
}
