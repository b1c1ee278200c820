/**
 * Start a real roomsync server for the integration tests: `roomsync serve --dev` (anonymous
 * peers get every data cap) on a free port and its own data dir, as the Python test kit's
 * `roomsync.testing.server` does. `ROOMSYNC_CMD` overrides the command (default `roomsync`,
 * falling back to `python -m roomsync.cli.main`).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

function command(): string[] {
  const cmd = process.env.ROOMSYNC_CMD;
  if (cmd) return cmd.split(" ");
  const probe = spawnSync("roomsync", ["--help"], { stdio: "ignore" });
  return probe.status === 0 ? ["roomsync"] : ["python", "-m", "roomsync.cli.main"];
}

export class TestServer {
  proc: ChildProcess | null = null;
  output = "";
  constructor(
    readonly port: number,
    readonly dataDir: string,
  ) {}

  static async create(): Promise<TestServer> {
    const dir = mkdtempSync(join(tmpdir(), "roomsync-js-"));
    const server = new TestServer(await freePort(), dir);
    await server.start();
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(dataDir = this.dataDir): Promise<void> {
    const [cmd, ...args] = command();
    const proc = spawn(cmd!, [...args, "serve", "--dev", "--host", "127.0.0.1", "--port", String(this.port), "--data-dir", dataDir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    proc.stdout!.on("data", (d) => (this.output += d));
    proc.stderr!.on("data", (d) => (this.output += d));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`roomsync serve exited ${proc.exitCode}:\n${this.output}`);
      try {
        const resp = await fetch(`${this.url}/healthz`);
        if (resp.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await this.stop();
    throw new Error(`roomsync serve did not become healthy:\n${this.output}`);
  }

  /** SIGTERM (the server drains its peers with 1012), SIGKILL after 10 s. */
  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = null;
    if (proc === null || proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** A token signed with this server's keys (`roomsync token mint`). */
  mint(opts: { room?: string; caps?: string; ttl?: string; actor?: string } = {}): string {
    const [cmd, ...args] = command();
    const out = spawnSync(
      cmd!,
      [...args, "token", "mint", "--data-dir", this.dataDir, "--room", opts.room ?? "*", "--caps", opts.caps ?? "read,write,presence,blob,reconcile,binary", "--ttl", opts.ttl ?? "1h", ...(opts.actor ? ["--actor", opts.actor] : [])],
      { encoding: "utf8" },
    );
    if (out.status !== 0) throw new Error(`token mint failed: ${out.stderr}`);
    const token = out.stdout.trim().split(/\s+/).find((w) => w.split(".").length === 3);
    if (!token) throw new Error(`no token in: ${out.stdout}`);
    return token;
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Poll `predicate` every 20 ms until it holds; throw after `timeoutMs`. */
export async function until(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
