import { existsSync, readFileSync } from 'node:fs';
import { isIP, isIPv4 } from 'node:net';
import type { Level } from '../agent/log.js';
import type { NodeDnsOptions } from '../agent/services.js';
import type { EtcdTlsOptions } from '../store/etcd.js';
import { JSON_OPTION, type Args, type CommandSpec, type OptionSpec } from './command.js';
import { print, printJson, warn } from './output.js';
import { UsageError } from './usage.js';

const DEFAULT_PREFIX = '/coreos.com/network';
const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

const endpointsOf = (text: string) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

function checkEndpoints(text: string): void {
  const list = endpointsOf(text);
  if (list.length === 0) throw new Error('--etcd-endpoints needs at least one URL, e.g. http://127.0.0.1:2379');
  for (const e of list) {
    if (!URL.canParse(e) || !['http:', 'https:'].includes(new URL(e).protocol)) throw new Error(`--etcd-endpoints: "${e}" is not an http:// or https:// URL`);
  }
}

/** `IPv4:PORT` or `[IPv6]:PORT`, port 1-65535. */
export function parseMetricsListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(text);
  const host = m?.[1] ?? m?.[2] ?? '';
  const port = Number(m?.[3]);
  if (!m || isIP(host) !== (m[1] ? 6 : 4) || port < 1 || port > 65535)
    throw new Error(`--metrics-listen takes IPv4:PORT or [IPv6]:PORT (port 1-65535), not "${text}"`);
  return { host, port };
}

export const ETCD_ENDPOINTS: OptionSpec = {
  name: 'etcd-endpoints',
  value: 'URL[,URL]',
  check: checkEndpoints,
  description: 'etcd to keep leases in, e.g. http://127.0.0.1:2379',
};

export const ETCD_OPTIONS: OptionSpec[] = [
  { name: 'etcd-prefix', value: 'PREFIX', default: DEFAULT_PREFIX, description: "key prefix (flannel's)" },
  { name: 'etcd-cafile', value: 'FILE', description: 'CA that signed the etcd server (turns on TLS)' },
  { name: 'etcd-certfile', value: 'FILE', description: 'client certificate (with --etcd-keyfile and --etcd-cafile)' },
  { name: 'etcd-keyfile', value: 'FILE', description: 'client key (with --etcd-certfile)' },
];

/** Where Weft keeps Services and pods in etcd: its own prefix, never inside flannel's. */
export const REGISTRY_PREFIX: OptionSpec = {
  name: 'registry-prefix',
  value: 'PREFIX',
  default: '/weft',
  description: "key prefix of Weft's Services and pods (beside flannel's --etcd-prefix, never inside it)",
};

export function etcdOf(a: Args): { endpoints: string[]; prefix: string; tls?: EtcdTlsOptions } {
  const endpoints = endpointsOf(a.str('etcd-endpoints')!);
  const [ca, cert, key] = [a.str('etcd-cafile'), a.str('etcd-certfile'), a.str('etcd-keyfile')];
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('give both --etcd-certfile and --etcd-keyfile, or neither');
  if (cert && !ca) throw new UsageError('--etcd-certfile needs --etcd-cafile (the CA that signed the etcd server)');
  const tls: EtcdTlsOptions | undefined = ca ? { caFile: ca, ...(cert ? { certFile: cert, keyFile: key! } : {}) } : undefined;
  return { endpoints, prefix: a.str('etcd-prefix')!, ...(tls ? { tls } : {}) };
}

export const agentCommands: CommandSpec[] = [
  {
    path: ['agent'],
    summary: 'the node agent (flanneld-compatible)',
    details:
      'It also runs the service proxy: Services and pods from --registry-prefix become nftables rules (tables ip weft-proxy*), and the cluster DNS on --cluster-dns (unless --no-dns). SIGTERM or SIGINT stops it; the routes and the service rules stay, so pod traffic and connections through Services survive a restart.',
    options: [
      { name: 'node', value: 'NAME', required: true, brief: true, description: "this node's name (kept in its lease)" },
      { ...ETCD_ENDPOINTS, required: true, brief: true },
      { name: 'state-dir', value: 'DIR', required: true, brief: true, description: 'for the status socket and the VtepMAC' },
      ...ETCD_OPTIONS,
      REGISTRY_PREFIX,
      { name: 'subnet-file', value: 'PATH', default: DEFAULT_SUBNET_FILE, description: "where to write flannel's subnet.env" },
      { name: 'iface', value: 'DEV', description: 'the underlay interface (default: the one with the default route)' },
      {
        name: 'public-ip',
        value: 'IP',
        check: (ip) => {
          if (!isIPv4(ip)) throw new Error(`--public-ip takes an IPv4 address, not "${ip}"`);
        },
        description: "the address other nodes reach this one at (default: --iface's)",
      },
      { name: 'lease-ttl', value: 'SECONDS', int: { min: 2, max: 86_400 * 365 }, description: "the lease's time to live (default: 24 h, as flannel)" },
      { name: 'resync', value: 'SECONDS', number: { min: 0.1 }, default: '10', description: 'how often to compare the kernel with the desired state' },
      { name: 'cni-socket', value: 'PATH', description: 'also serve CNI requests on this socket (the fast path)' },
      {
        name: 'metrics-listen',
        value: 'HOST:PORT',
        check: parseMetricsListen,
        description: 'serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 10.0.0.5:9402 (default: off)',
      },
      { name: 'no-ip-masq', description: 'do not masquerade pod traffic leaving the Network' },
      {
        name: 'cluster-dns',
        value: 'IP',
        default: '10.96.0.10',
        check: (ip) => {
          if (!isIPv4(ip)) throw new Error(`--cluster-dns takes an IPv4 address, not "${ip}"`);
        },
        description: "serve the cluster DNS on this node at this IP (kube-dns's ClusterIP), on a dummy device weft-dns",
      },
      { name: 'cluster-domain', value: 'DOMAIN', default: 'cluster.local', description: 'the DNS zone of Services and pods' },
      { name: 'dns-ttl', value: 'SECONDS', int: { min: 0, max: 3600 }, description: 'TTL of cluster DNS answers (default 5)' },
      {
        name: 'dns-upstream',
        value: 'IP[:PORT][,...]',
        description: "resolvers for names outside the zone (default: the node's /etc/resolv.conf)",
      },
      { name: 'no-dns', description: 'no node-local DNS: pods reach the kube-dns Service through the service proxy' },
      { name: 'no-forward-rules', description: "do not make other tables' forward hooks pass the pod Network (flannel's --iptables-forward-rules=false)" },
      { name: 'dry-run', description: 'print the lease it would take and the plan the first reconcile would apply; change nothing' },
      { name: 'log-format', value: 'FORMAT', choices: ['text', 'json'], default: 'text', description: 'log lines on stderr' },
      { name: 'log-level', value: 'LEVEL', choices: ['debug', 'info', 'warn', 'error'], default: 'info', description: 'least severe level logged' },
      {
        name: 'cleanup',
        mode: 'remove what the agent programmed',
        description:
          'remove what the agent programmed (read from --subnet-file; the service proxy tables and the DNS device too) and, with --etcd-endpoints, release its lease',
      },
    ],
    run: agentCommand,
  },
  {
    path: ['agent', 'status'],
    summary: 'its lease, remote leases, desired vs programmed',
    options: [{ name: 'state-dir', value: 'DIR', required: true, description: "the agent's --state-dir" }, JSON_OPTION],
    run: async (a) => {
      const { formatStatus, readStatus } = await import('../agent/status.js');
      const { status, note } = await readStatus(a.str('state-dir')!);
      if (a.bool('json')) printJson(note ? { ...status, note } : status);
      else print(formatStatus(status, note));
      return 0;
    },
  },
  {
    path: ['network', 'init'],
    summary: 'check the network config, write it to etcd',
    options: [
      {
        name: 'config',
        value: 'JSON|FILE',
        required: true,
        description: 'flannel\'s net-conf.json, inline or a file, e.g. \'{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}\'',
      },
      { ...ETCD_ENDPOINTS, required: true },
      ...ETCD_OPTIONS,
      { name: 'force', description: 'replace a different config already there (strands running pods)' },
    ],
    run: networkInit,
  },
];

async function agentCommand(a: Args): Promise<number> {
  const format = a.str('log-format') as 'text' | 'json';
  const node = a.str('node');
  const { createLogger } = await import('../agent/log.js');
  const { Agent } = await import('../agent/agent.js');
  const { cleanup } = await import('../agent/cleanup.js');
  const log = createLogger({ format, level: a.str('log-level') as Level, ...(node ? { base: { node } } : {}) });
  const iface = a.str('iface');
  const publicIP = a.str('public-ip');
  if (a.bool('cleanup')) {
    const lease = a.str('etcd-endpoints') ? { etcd: etcdOf(a), node: node ?? '', ...(iface ? { iface } : {}), ...(publicIP ? { publicIP } : {}) } : undefined;
    const changes = await cleanup(a.str('subnet-file')!, log, lease);
    if (changes.length === 0) log.info('nothing to clean up');
    return 0;
  }
  const etcd = etcdOf(a);
  const registryPrefix = a.str('registry-prefix')!;
  if (`${registryPrefix}/`.startsWith(`${etcd.prefix.replace(/\/+$/, '')}/`))
    throw new UsageError(`--registry-prefix ${registryPrefix} lies inside flannel's --etcd-prefix ${etcd.prefix}; give Weft its own, e.g. /weft`);
  const ttl = a.num('lease-ttl');
  const cniSocket = a.str('cni-socket');
  const metricsListen = a.str('metrics-listen');
  const agent = new Agent({
    node: node!,
    ...(iface ? { iface } : {}),
    ...(publicIP ? { publicIP } : {}),
    etcdEndpoints: etcd.endpoints,
    etcdPrefix: etcd.prefix,
    ...(etcd.tls ? { etcdTls: etcd.tls } : {}),
    registryPrefix,
    subnetFile: a.str('subnet-file')!,
    stateDir: a.str('state-dir')!,
    ...(ttl !== undefined ? { leaseTtlSeconds: ttl } : {}),
    resyncSeconds: a.num('resync')!,
    ...(cniSocket ? { cniSocket } : {}),
    ...(metricsListen ? { metricsListen: parseMetricsListen(metricsListen) } : {}),
    ipMasq: !a.bool('no-ip-masq'),
    forwardRules: !a.bool('no-forward-rules'),
    ...(a.bool('no-dns') ? {} : { dns: dnsOf(a) }),
    dryRun: a.bool('dry-run'),
    out: print,
    log,
  });
  if (a.bool('dry-run')) {
    await agent.start();
    await agent.stop();
    return 0;
  }
  let signalled: (sig: string) => void = () => undefined;
  const signal = new Promise<string>((resolve) => (signalled = resolve));
  const onSignal = (sig: NodeJS.Signals) => signalled(sig);
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const startup = agent.start().then(() => 'started' as const);
  const first = await Promise.race([startup, signal, agent.done.then(() => 'done')]);
  if (first !== 'started') {
    await agent.stop();
    return 0;
  }
  try {
    const sig = await Promise.race([signal, agent.done.then(() => 'done')]);
    log.info(`received ${sig}, shutting down`);
    await agent.stop();
    return 0;
  } catch (err) {
    await agent.stop();
    throw err;
  }
}

function dnsOf(a: Args): NodeDnsOptions {
  const ttl = a.num('dns-ttl');
  const upstreams = a.str('dns-upstream');
  return {
    ip: a.str('cluster-dns')!,
    zone: a.str('cluster-domain')!,
    ...(ttl !== undefined ? { ttl } : {}),
    ...(upstreams ? { upstreams: endpointsOf(upstreams) } : {}),
  };
}

async function networkInit(a: Args): Promise<number> {
  const arg = a.str('config')!;
  const { NetworkConfigError, parseNetworkConfig } = await import('../subnet/config.js');
  let text = arg;
  if (!arg.trimStart().startsWith('{')) {
    if (!existsSync(arg)) throw new UsageError(`--config ${arg} is neither JSON (it does not start with "{") nor an existing file`);
    text = readFileSync(arg, 'utf8');
  }
  try {
    parseNetworkConfig(text);
  } catch (err) {
    if (err instanceof NetworkConfigError) {
      warn(`weft: ${err.message}${err.field ? ` [field ${err.field}]` : ''}`);
      return 1;
    }
    throw err;
  }
  const etcd = etcdOf(a);
  const { EtcdStore } = await import('../store/etcd.js');
  const { CONFIG_KEY } = await import('../subnet/lease.js');
  const store = new EtcdStore({ endpoints: etcd.endpoints, prefix: etcd.prefix, ...(etcd.tls ? { tls: etcd.tls } : {}) });
  try {
    const existing = await store.get(CONFIG_KEY);
    if (existing && existing.value !== text) {
      let same = false;
      try {
        same = JSON.stringify(parseNetworkConfig(existing.value)) === JSON.stringify(parseNetworkConfig(text), (_, v: unknown) => v);
      } catch {
        // the stored config is invalid: replacing it needs --force too
      }
      if (!same && !a.bool('force')) {
        warn(
          `weft: ${etcd.prefix}/${CONFIG_KEY} already holds a different config:\n${existing.value}\nchanging the network under running nodes strands their pods; pass --force to replace it`,
        );
        return 1;
      }
    }
    if (existing?.value === text) {
      print(`${etcd.prefix}/${CONFIG_KEY} already holds this config`);
      return 0;
    }
    await store.put(CONFIG_KEY, text);
    print(`wrote ${etcd.prefix}/${CONFIG_KEY}`);
    return 0;
  } finally {
    await store.close();
  }
}
