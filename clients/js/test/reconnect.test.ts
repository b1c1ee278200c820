import { describe, expect, it } from "vitest";
import { Backoff, closeAction, ReconnectPolicy, TERMINAL_CLOSE_CODES } from "../src/reconnect.js";

describe("Backoff (roomsync.core.reconnect)", () => {
  it("doubles from base up to max, jittered in [cap/2, cap]", () => {
    const b = new Backoff();
    expect(b.cap(0)).toBeCloseTo(0.1);
    expect(b.cap(3)).toBeCloseTo(0.8);
    expect(b.cap(100)).toBe(10);
    expect(b.jittered(0, 0)).toBeCloseTo(0.05);
    expect(b.jittered(2, 0.5)).toBeCloseTo(0.3);
    expect(b.jittered(20, 0.999)).toBeLessThanOrEqual(10);
    expect(() => b.jittered(0, 1)).toThrow(RangeError);
    expect(() => new Backoff({ factor: 0.5 })).toThrow(RangeError);
  });
});

describe("ReconnectPolicy: close code -> action", () => {
  it("maps the SPEC close codes", () => {
    expect(closeAction(1006)).toBe("retry");
    expect(closeAction(1011)).toBe("retry");
    expect(closeAction(1012)).toBe("retry");
    expect(closeAction(4008)).toBe("retry");
    expect(closeAction(4001)).toBe("resync");
    expect(closeAction(4002)).toBe("refresh-token");
    expect(closeAction(4999)).toBe("retry");
    expect([...TERMINAL_CLOSE_CODES].sort()).toEqual([1002, 4003, 4004]);
  });

  it("stops on fatal codes, and on 4002 without a token provider", () => {
    const p = new ReconnectPolicy();
    for (const code of [1002, 4003, 4004]) {
      expect(p.afterClose(code, { welcomed: true, random: () => 0.5 }).stop).toBe("terminal");
    }
    expect(p.afterClose(4002, { welcomed: true, random: () => 0.5 }).stop).toBe("no-token-provider");
    const q = new ReconnectPolicy(new Backoff(), true, true);
    const d = q.afterClose(4002, { welcomed: true, random: () => 0.5 });
    expect(d.stop).toBeNull();
    expect(d.delay).toBe(0);
  });

  it("backs off with jitter, starts over after a welcome, honours retry_after_ms of overload", () => {
    const p = new ReconnectPolicy(new Backoff({ base: 1, factor: 2, max: 8 }));
    const delays = [0, 1, 2, 3, 4].map(() => p.afterClose(1006, { welcomed: false, random: () => 0.5 }).delay);
    expect(delays).toEqual([0.75, 1.5, 3, 6, 6]);
    expect(p.afterClose(1006, { welcomed: true, random: () => 0 }).delay).toBe(0.5);
    const hinted = p.afterClose(1011, { welcomed: true, random: () => 0, errorCode: "overload", retryAfterMs: 4000 });
    expect(hinted.delay).toBe(4);
    expect(hinted.retryAfterMs).toBe(4000);
    // The hint counts only for overload.
    expect(p.afterClose(1011, { welcomed: true, random: () => 0, errorCode: "internal", retryAfterMs: 4000 }).delay).toBe(0.5);
  });

  it("4001 reconnects at once the first time, then backs off", () => {
    const p = new ReconnectPolicy(new Backoff({ base: 1 }));
    expect(p.afterClose(4001, { welcomed: true, random: () => 0.5 })).toMatchObject({ action: "resync", delay: 0 });
    expect(p.afterClose(4001, { welcomed: false, random: () => 0.5 }).delay).toBe(1.5);
  });

  it("stops when reconnecting is off", () => {
    const p = new ReconnectPolicy(new Backoff(), false);
    expect(p.afterClose(1006, { welcomed: true, random: () => 0.5 }).stop).toBe("reconnect-off");
  });
});
