// Builds dist/probe.js (ESM, readable), dist/probe.min.js (ESM, minified: the
// size budget's file) and dist/index.d.ts, and copies the minified file
// beside the example app (example/probe.min.js, checked in: `synchealth up
// --demo` embeds it, so cargo alone builds the demo; scripts/test checks the
// copy is this build's). `--size` prints the budget line:
// minified bytes and gzip bytes (node's zlib, level 9), against 6 KiB.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const common = { entryPoints: ["src/index.ts"], bundle: true, format: "esm", target: "es2020", logLevel: "warning" };
await build({ ...common, outfile: "dist/probe.js" });
await build({ ...common, outfile: "dist/probe.min.js", minify: true });
copyFileSync("dist/probe.min.js", "example/probe.min.js");
execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "."], { stdio: "inherit" });

if (process.argv.includes("--size")) {
  const min = readFileSync("dist/probe.min.js");
  const gz = gzipSync(min, { level: 9 }).length;
  console.log(`dist/probe.min.js: ${min.length} bytes minified, ${gz} bytes gzip (budget 6144): ${gz <= 6144 ? "within" : "OVER"}`);
  if (gz > 6144) process.exit(1);
}
