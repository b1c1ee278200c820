// Record what a web build was made from: `node ../stamp.mjs demo|inspect` after `vite
// build` writes src/roomsync/web/<name>/build.json with a SHA-256 over the sources
// (tests/web/test_assets.py recomputes it and fails when the shipped build is older).
// Digest: sha256 over, for every file under the roots (sorted by repo-relative POSIX
// path, node_modules skipped), "<path>\n<sha256 hex of its bytes>\n".
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..");
const ROOTS = {
  demo: ["clients/demo/index.html", "clients/demo/src", "clients/demo/vite.config.js", "clients/demo/package.json", "clients/demo/package-lock.json", "clients/js/src"],
  inspect: ["clients/inspector/index.html", "clients/inspector/src", "clients/inspector/vite.config.js", "clients/inspector/package.json", "clients/inspector/package-lock.json"],
};

function files(root) {
  const abs = join(repo, root);
  if (statSync(abs).isFile()) return [root];
  return readdirSync(abs, { withFileTypes: true })
    .filter((d) => d.name !== "node_modules")
    .flatMap((d) => files(relative(repo, join(abs, d.name)).split(sep).join("/")));
}

export function sourceDigest(roots) {
  const all = roots.flatMap(files).sort();
  const h = createHash("sha256");
  for (const f of all) h.update(`${f}\n${createHash("sha256").update(readFileSync(join(repo, f))).digest("hex")}\n`);
  return { digest: h.digest("hex"), files: all.length };
}

const name = process.argv[2];
if (!(name in ROOTS)) throw new Error(`usage: node stamp.mjs ${Object.keys(ROOTS).join("|")}`);
const { digest, files: count } = sourceDigest(ROOTS[name]);
const out = join(repo, "src/roomsync/web", name, "build.json");
writeFileSync(out, JSON.stringify({ app: name, sources: ROOTS[name], source_sha256: digest, source_files: count }, null, 2) + "\n");
console.log(`${relative(repo, out)}: ${count} source files, sha256 ${digest}`);
