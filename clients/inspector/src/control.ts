/**
 * The control plane from the browser: `POST /v1/control/{family}/{command}` with the
 * operator token in the Authorization header (never in a URL), and `/metrics`.
 */
export interface Reject {
  class: string;
  code: string;
  message: string;
  field?: string;
  required?: string;
  next?: string;
}

export class ControlError extends Error {
  constructor(
    readonly status: number,
    readonly reject: Reject,
  ) {
    super(`${reject.class}/${reject.code}: ${reject.message}`);
  }
}

export async function control<T>(token: string, family: string, command: string, payload: Record<string, unknown> = {}): Promise<T> {
  const resp = await fetch(`/v1/control/${family}/${command}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(payload),
    credentials: "omit",
    cache: "no-store",
    referrerPolicy: "no-referrer",
  });
  let body: { ok: boolean; result?: T; reject?: Reject };
  try {
    body = await resp.json();
  } catch {
    throw new ControlError(resp.status, { class: "unavailable", code: "bad-response", message: `HTTP ${resp.status}` });
  }
  if (!body.ok) throw new ControlError(resp.status, body.reject ?? { class: "unavailable", code: "bad-response", message: `HTTP ${resp.status}` });
  return body.result as T;
}

/** Prometheus text -> `name{labels}` -> value (counters and gauges; histogram buckets skipped). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#") || line.includes("_bucket{")) continue;
    const at = line.lastIndexOf(" ");
    const value = Number(line.slice(at + 1));
    if (Number.isFinite(value)) out.set(line.slice(0, at), value);
  }
  return out;
}

export async function metrics(): Promise<Map<string, number>> {
  const resp = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
  if (!resp.ok) throw new Error(`/metrics: HTTP ${resp.status}`);
  return parseMetrics(await resp.text());
}

/** The values of `family{label="x"}` series by label value, summed over other labels. */
export function byLabel(m: Map<string, number>, family: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`${label}="([^"]*)"`);
  for (const [key, value] of m) {
    if (!key.startsWith(`${family}{`)) continue;
    const match = re.exec(key);
    if (match) out.set(match[1]!, (out.get(match[1]!) ?? 0) + value);
  }
  return out;
}
