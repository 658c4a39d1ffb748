/**
 * The Weft side of `weft bench dns`, run pinned inside the bench's namespace: ClusterDns on
 * 127.0.0.1:PORT over an in-memory registry of N ClusterIP Services (`svc-<i>.ns-<i % 100>`, one
 * named port each). Prints one JSON line when serving (heap used by the table), then serves until SIGTERM.
 */
import { ClusterDns } from '../dns/server.js';
import { FakeRegistry } from '../testing/dns.js';

const [count, port] = process.argv.slice(2).map(Number);
const reg = new FakeRegistry();
const before = process.memoryUsage().heapUsed;
for (let i = 0; i < count!; i++)
  reg.service({
    name: `svc-${i}`,
    namespace: `ns-${i % 100}`,
    clusterIP: `10.96.${(i >> 8) & 255}.${i & 255}`,
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
  });
const dns = new ClusterDns({ cache: reg, allow: ['127.0.0.0/8'], listen: [{ address: '127.0.0.1', port: port! }], upstreams: [] });
await dns.start();
process.stdout.write(`${JSON.stringify({ ready: true, heapMB: (process.memoryUsage().heapUsed - before) / 1e6, rssMB: process.memoryUsage().rss / 1e6 })}\n`);
process.once('SIGTERM', () => void dns.stop().then(() => process.exit(0)));
