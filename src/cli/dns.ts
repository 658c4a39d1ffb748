import { isIPv4 } from 'node:net';
import type { Level } from '../agent/log.js';
import { parseCidr } from '../ip/cidr.js';
import { ETCD_ENDPOINTS, ETCD_OPTIONS, etcdOf, REGISTRY_PREFIX } from './agent.js';
import { JSON_OPTION, type Args, type CommandSpec, type GroupSpec } from './command.js';
import { print, printJson, warn } from './output.js';

/** `weft dns serve`: the cluster DNS on its own (the agent runs the same server node-locally). */
export const dnsGroup: GroupSpec = { path: ['dns'], summary: 'the cluster DNS (Kubernetes DNS-Based Service Discovery 1.1.0)' };

function checkListen(text: string): void {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(text);
  if (!m || !isIPv4(m[1]!) || Number(m[2] ?? 53) > 65535) throw new Error(`--listen takes IPv4[:PORT], not "${text}"`);
}

function checkUpstream(text: string): void {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(text);
  if (!m || !isIPv4(m[1]!) || Number(m[2] ?? 53) < 1 || Number(m[2] ?? 53) > 65535) throw new Error(`--upstream takes IPv4[:PORT], not "${text}"`);
}

function checkAllow(text: string): void {
  for (const c of text.split(',')) {
    try {
      parseCidr(c.trim());
    } catch {
      throw new Error(`--allow takes CIDRs separated by commas, not "${c}"`);
    }
  }
}

function checkZone(text: string): void {
  if (!/^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(text) || text.length > 200)
    throw new Error(`--cluster-domain "${text}" is not a domain name (lowercase labels separated by dots)`);
}

export const dnsCommands: CommandSpec[] = [
  {
    path: ['dns', 'serve'],
    summary: 'serve the cluster DNS from the registry in etcd until SIGTERM',
    details:
      "Answers <svc>.<ns>.svc.<zone> (A, SRV for named ports, headless: one A per ready endpoint and <hostname>.<svc>...), PTR of ClusterIPs and pod/endpoint IPs, a-b-c-d.<ns>.pod.<zone>, ExternalName CNAMEs and dns-version.<zone> TXT, with NXDOMAIN/NODATA and the SOA for names that are missing; follows the registry by watch. Other names go to the upstreams, cached as their TTLs say. Clients outside --allow are REFUSED. Endpoints count whatever the leases say (the agent's node-local DNS leaves out nodes without one).",
    options: [
      { ...ETCD_ENDPOINTS, required: true, brief: true, description: 'etcd holding the registry' },
      ...ETCD_OPTIONS,
      REGISTRY_PREFIX,
      {
        name: 'listen',
        value: 'IP[:PORT]',
        multiple: true,
        brief: true,
        check: checkListen,
        description: 'serve UDP and TCP here (default 127.0.0.1:53)',
      },
      { name: 'cluster-domain', value: 'ZONE', default: 'cluster.local', check: checkZone, description: 'the cluster zone' },
      { name: 'ttl', value: 'SECONDS', int: { min: 0, max: 86_400 }, default: '5', description: 'TTL of the answers from the zone (and its negative TTL)' },
      {
        name: 'upstream',
        value: 'IP[:PORT]',
        multiple: true,
        check: checkUpstream,
        description: 'resolver for names outside the zone (default the nameservers of /etc/resolv.conf)',
      },
      {
        name: 'allow',
        value: 'CIDR[,CIDR]',
        default: '127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10',
        check: checkAllow,
        description: 'client ranges answered; others get REFUSED',
      },
      { name: 'log-format', value: 'FORMAT', choices: ['text', 'json'], default: 'text', description: 'log lines on stderr' },
      { name: 'log-level', value: 'LEVEL', choices: ['debug', 'info', 'warn', 'error'], default: 'info', description: 'least severe level logged' },
      { ...JSON_OPTION, description: 'print where it serves as JSON on stdout when ready, and its counters when it stops' },
    ],
    run: dnsServe,
  },
];

async function dnsServe(a: Args): Promise<number> {
  const etcd = etcdOf(a);
  const [{ createLogger }, { EtcdStore }, { RegistryCache }, { ClusterDns }, { isStoreUnavailable }] = await Promise.all([
    import('../agent/log.js'),
    import('../store/etcd.js'),
    import('../service/cache.js'),
    import('../dns/server.js'),
    import('../store/store.js'),
  ]);
  const log = createLogger({ format: a.str('log-format') as 'text' | 'json', level: a.str('log-level') as Level });
  const store = new EtcdStore({ endpoints: etcd.endpoints, prefix: a.str('registry-prefix')!, ...(etcd.tls ? { tls: etcd.tls } : {}) });
  const cache = new RegistryCache(store, (m) => log.warn(m));
  const listen = (a.list('listen').length ? a.list('listen') : ['127.0.0.1:53']).map((l) => {
    const [address, port] = l.split(':');
    return { address: address!, port: Number(port ?? 53) };
  });
  const upstreams = a.list('upstream');
  const dns = new ClusterDns({
    cache,
    zone: a.str('cluster-domain')!,
    ttl: a.num('ttl')!,
    ...(upstreams.length ? { upstreams } : {}),
    allow: a
      .str('allow')!
      .split(',')
      .map((s) => s.trim()),
    listen,
    log,
  });
  try {
    await cache.start();
  } catch (err) {
    await store.close().catch(() => undefined);
    warn(`weft: cannot read the registry from ${etcd.endpoints.join(',')}: ${(err as Error).message}${isStoreUnavailable(err) ? ' (is etcd running?)' : ''}`);
    return 1;
  }
  try {
    await dns.start();
  } catch (err) {
    cache.stop();
    await store.close().catch(() => undefined);
    warn(`weft: cannot serve on ${listen.map((l) => `${l.address}:${l.port}`).join(' ')}: ${(err as Error).message}`);
    return 1;
  }
  const s = dns.stats();
  if (a.bool('json')) printJson({ listen: s.listen, zone: s.zone, upstreams: s.upstreams, records: s.records });
  else print(`serving ${s.zone} on ${s.listen.map((l) => `${l.address}:${l.port}`).join(' ')} (udp, tcp); upstreams ${s.upstreams.join(' ') || 'none'}`);
  const sig = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const final = dns.stats();
  await dns.stop();
  cache.stop();
  await store.close().catch(() => undefined);
  if (a.bool('json')) printJson(final);
  else log.info(`stopped on ${sig}`, { queries: final.queries.udp + final.queries.tcp, forwarded: final.forwarded });
  return 0;
}
