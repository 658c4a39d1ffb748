/**
 * The halves of `weft bench dns` that run in a namespace (argv[2] is the role):
 *
 *   serve N PORT  (the bench's namespace, pinned): ClusterDns on 127.0.0.1:PORT over an in-memory
 *     registry of N ClusterIP Services (`svc-<i>.ns-<i % 100>`, one named port each). Prints one JSON
 *     line when serving (heap used by the table), then serves until SIGTERM.
 *   writer ENDPOINT  (a lab's etcd namespace): one JSON line {name, namespace} on stdin → the
 *     ClusterIP Service written through the Registry, and one JSON line {startNs, endNs}: the write's
 *     start and its return (etcd has committed it).
 *   watch NAME SERVER INTERVAL_MS TIMEOUT_MS  (a lab pod's namespace): asks SERVER:53 for NAME's A
 *     record every INTERVAL_MS over UDP. Prints {armed: true} at the first NXDOMAIN (the server
 *     answers, the name is not there yet), then {atNs, tries} at the first answer that has the record,
 *     or {error}; then exits.
 *
 * Times are process.hrtime (CLOCK_MONOTONIC, one clock for every process of the machine), in ns as
 * strings, so the bench can subtract the writer's return from a watcher's first answer.
 */
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
import * as packet from 'dns-packet';

const now = () => process.hrtime.bigint();
const say = (x: object) => process.stdout.write(`${JSON.stringify(x)}\n`);
const [role, ...args] = process.argv.slice(2);

async function serve(count: number, port: number): Promise<void> {
  const [{ ClusterDns }, { FakeRegistry }] = await Promise.all([import('../dns/server.js'), import('../testing/dns.js')]);
  const reg = new FakeRegistry();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < count; i++)
    reg.service({
      name: `svc-${i}`,
      namespace: `ns-${i % 100}`,
      clusterIP: `10.96.${(i >> 8) & 255}.${i & 255}`,
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
    });
  const dns = new ClusterDns({ cache: reg, allow: ['127.0.0.0/8'], listen: [{ address: '127.0.0.1', port }], upstreams: [] });
  await dns.start();
  say({ ready: true, heapMB: (process.memoryUsage().heapUsed - before) / 1e6, rssMB: process.memoryUsage().rss / 1e6 });
  process.once('SIGTERM', () => void dns.stop().then(() => process.exit(0)));
}

async function writer(endpoint: string): Promise<void> {
  const [{ DEFAULT_REGISTRY_PREFIX, Registry }, { EtcdStore }, { Checker, checkService }] = await Promise.all([
    import('../service/registry.js'),
    import('../store/etcd.js'),
    import('../service/validate.js'),
  ]);
  const registry = new Registry(new EtcdStore({ endpoints: endpoint.split(','), prefix: DEFAULT_REGISTRY_PREFIX }));
  say({ ready: true });
  for await (const line of createInterface({ input: process.stdin })) {
    const { name, namespace } = JSON.parse(line) as { name: string; namespace: string };
    try {
      const c = new Checker();
      const service = checkService(c, {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name, namespace },
        spec: { type: 'ClusterIP', ports: [{ protocol: 'TCP', port: 80, targetPort: 8080 }] },
      });
      if (!service || c.issues.length > 0) throw new Error(c.issues.map((i) => `${i.path} ${i.message}`).join('; '));
      const startNs = now();
      await registry.applyManifests([{ kind: 'Service', service }]);
      say({ startNs: String(startNs), endNs: String(now()) });
    } catch (e) {
      say({ error: (e as Error).message });
    }
  }
  process.exit(0);
}

function watch(name: string, server: string, intervalMs: number, timeoutMs: number): void {
  const sock = createSocket('udp4');
  let tries = 0;
  let armed = false;
  const finish = (x: object) => {
    say(x);
    clearInterval(ticker);
    clearTimeout(deadline);
    sock.close();
  };
  sock.on('message', (msg) => {
    const at = now();
    let p: packet.Packet;
    try {
      p = packet.decode(msg);
    } catch {
      return;
    }
    const rcode = (p.flags ?? 0) & 0xf; // 0 NOERROR, 3 NXDOMAIN
    if (rcode === 3) {
      if (!armed) say({ armed: (armed = true) });
    } else if (armed && rcode === 0 && (p.answers ?? []).some((a) => a.type === 'A')) finish({ atNs: String(at), tries });
  });
  sock.on('error', (e) => finish({ error: e.message }));
  const ask = () => {
    tries++;
    const q = packet.encode({ type: 'query', id: tries & 0xffff, flags: packet.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
    sock.send(q, 53, server);
  };
  const ticker = setInterval(ask, intervalMs);
  const deadline = setTimeout(
    () => finish({ error: `${server} had no A record for ${name} within ${timeoutMs} ms${armed ? '' : ' (and never answered NXDOMAIN)'}` }),
    timeoutMs,
  );
  ask();
}

if (role === 'serve' && args.length === 2) await serve(Number(args[0]), Number(args[1]));
else if (role === 'writer' && args[0]) await writer(args[0]);
else if (role === 'watch' && args.length === 4) watch(args[0]!, args[1]!, Number(args[2]), Number(args[3]));
else {
  process.stderr.write('usage: dns-driver.js serve N PORT | writer ETCD_ENDPOINT | watch NAME SERVER INTERVAL_MS TIMEOUT_MS\n');
  process.exit(2);
}
