// A service worker using the probe, as an app whose sync runs in its worker
// would (a periodic background sync): the page asks it to record attempts,
// and it answers once they are uploaded. The same database name as the
// page's probe, so the two share a buffer's lock and never send one event twice.
import { Probe } from "/dist/probe.js";

let probe;
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("message", (e) => {
  const { endpoint, key, app, n } = e.data;
  probe ??= new Probe({ endpoint, ingestKey: key, appVersion: app, uploadInterval: 200 });
  e.waitUntil(
    (async () => {
      for (let i = 0; i < n; i++) probe.start("pull", "scheduled").succeed({ records_down: i });
      const empty = await probe.flush();
      e.source.postMessage({ empty, stats: probe.stats() });
    })(),
  );
});
