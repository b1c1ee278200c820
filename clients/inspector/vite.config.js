// Built into the Python package (src/roomsync/web/inspect), served by `roomsync serve
// --demo` (or `--inspect`) at /inspect/. It talks to the control plane and /metrics only.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/inspect/",
  esbuild: { jsx: "automatic" },
  build: {
    outDir: fileURLToPath(new URL("../../src/roomsync/web/inspect/", import.meta.url)),
    emptyOutDir: true,
    sourcemap: false,
  },
  server: { proxy: { "/v1": "http://127.0.0.1:8787", "/metrics": "http://127.0.0.1:8787" } },
});
