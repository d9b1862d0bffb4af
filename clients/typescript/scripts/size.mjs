// `npm run size`: the client's size in a browser bundle, minified and gzipped (esbuild), per
// entry point, with its one dependency (eventsource-parser) included.
import { gzipSync } from "node:zlib";

import { build } from "esbuild";

for (const entry of ["dist/index.js", "dist/frontend.js"]) {
  const result = await build({
    entryPoints: [entry], bundle: true, minify: true, format: "esm", platform: "browser",
    target: "es2022", write: false, logLevel: "error",
  });
  const code = result.outputFiles[0].contents;
  const gzipped = gzipSync(code, { level: 9 }).length;
  console.log(`${entry}: ${(code.length / 1024).toFixed(1)} kB minified, `
    + `${(gzipped / 1024).toFixed(1)} kB min+gzip`);
}
