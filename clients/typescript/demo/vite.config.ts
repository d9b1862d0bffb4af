// `npm run demo`: the demo page on http://127.0.0.1:5173 (add it to the API's CORS_ORIGINS).
import { fileURLToPath } from "node:url";

import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  // Bundled before the first page load, so the page never reloads under a test.
  optimizeDeps: { include: ["eventsource-parser"] },
  server: { host: "127.0.0.1", port: 5173, strictPort: true },
});
