// Serves the example app (and the built probe) on http://127.0.0.1:5180 (or
// PORT), for a collector started to allow that origin:
//   synchealth up --demo --ingest-key shk_demo --ingest-key-allowed-origin http://127.0.0.1:5180
//   npm run example   # then open the printed address
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const port = Number(process.env.PORT || 5180);
const types = { ".html": "text/html", ".js": "text/javascript" };
createServer(async (req, res) => {
  let path = normalize(new URL(req.url, "http://x").pathname).replace(/^(\.\.[/\\])+/, "");
  const body = await readFile(join(root, path)).catch(() => null);
  if (!body) return res.writeHead(404).end();
  res.writeHead(200, { "content-type": types[extname(path)] || "application/octet-stream" }).end(body);
}).listen(port, "127.0.0.1", () => {
  const collector = process.env.COLLECTOR || "http://127.0.0.1:8080";
  console.log(`example app: http://127.0.0.1:${port}/example/index.html?endpoint=${collector}&key=${process.env.KEY || "shk_demo"}`);
});
