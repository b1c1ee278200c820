import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 60_000,
    // The integration test starts real servers on free ports: keep files sequential.
    fileParallelism: false,
  },
});
