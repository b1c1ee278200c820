// Built into the Python package (src/roomsync/web/demo), served by `roomsync serve --demo`
// at /demo/. roomsync-client is bundled from its TypeScript source in ../js (the code the
// npm package ships), so the build needs `npm ci` in clients/js first (for fflate).
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const js = fileURLToPath(new URL("../js/src/", import.meta.url));

export default defineConfig({
  base: "/demo/",
  esbuild: { jsx: "automatic" },
  resolve: {
    alias: [
      { find: /^roomsync-client\/react$/, replacement: `${js}react.ts` },
      { find: /^roomsync-client$/, replacement: `${js}index.ts` },
    ],
    // react.ts of ../js must use this app's React, not the copy in ../js/node_modules.
    dedupe: ["react", "react-dom"],
  },
  build: {
    outDir: fileURLToPath(new URL("../../src/roomsync/web/demo/", import.meta.url)),
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: { proxy: { "/ws": { target: "ws://127.0.0.1:8787", ws: true }, "/v1": "http://127.0.0.1:8787" } },
});
