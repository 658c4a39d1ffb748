import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Agent, cleanup } from '../agent/agent.js';
import { createLogger, type Level } from '../agent/log.js';
import { AgentError } from '../agent/node.js';
import { formatStatus, readStatus } from '../agent/status.js';
import { EtcdStore, type EtcdTlsOptions } from '../store/etcd.js';
import { NetworkConfigError, parseNetworkConfig } from '../subnet/config.js';
import { CONFIG_KEY } from '../subnet/lease.js';
import { UsageError } from './usage.js';

const DEFAULT_PREFIX = '/coreos.com/network';
const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

const ETCD_OPTIONS = {
  'etcd-endpoints': { type: 'string' },
  'etcd-prefix': { type: 'string', default: DEFAULT_PREFIX },
  'etcd-cafile': { type: 'string' },
  'etcd-certfile': { type: 'string' },
  'etcd-keyfile': { type: 'string' },
} as const;

type EtcdValues = { 'etcd-endpoints'?: string; 'etcd-prefix'?: string; 'etcd-cafile'?: string; 'etcd-certfile'?: string; 'etcd-keyfile'?: string };

function etcdOf(v: EtcdValues, command: string): { endpoints: string[]; prefix: string; tls?: EtcdTlsOptions } {
  const endpoints = (v['etcd-endpoints'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (endpoints.length === 0) throw new UsageError(`${command} needs --etcd-endpoints URL[,URL] (e.g. http://127.0.0.1:2379)`);
  if ((v['etcd-certfile'] === undefined) !== (v['etcd-keyfile'] === undefined)) {
    throw new UsageError('give both --etcd-certfile and --etcd-keyfile, or neither');
  }
  if (v['etcd-certfile'] && !v['etcd-cafile']) throw new UsageError('--etcd-certfile needs --etcd-cafile (the CA that signed the etcd server)');
  const tls: EtcdTlsOptions | undefined = v['etcd-cafile']
    ? { caFile: v['etcd-cafile'], ...(v['etcd-certfile'] ? { certFile: v['etcd-certfile'], keyFile: v['etcd-keyfile']! } : {}) }
    : undefined;
  return { endpoints, prefix: v['etcd-prefix'] ?? DEFAULT_PREFIX, ...(tls ? { tls } : {}) };
}

const AGENT_USAGE = `weft agent: the per-node daemon (flanneld-compatible)

  weft agent --node NAME --etcd-endpoints URL[,URL] --subnet-file PATH --state-dir DIR
             [--iface DEV] [--public-ip IP] [--etcd-prefix /coreos.com/network]
             [--etcd-cafile F --etcd-certfile F --etcd-keyfile F] [--lease-ttl SECONDS]
             [--resync SECONDS] [--cni-socket PATH] [--no-ip-masq]
             [--log-format text|json] [--log-level debug|info|warn|error]
  weft agent --cleanup [--subnet-file PATH]      remove the devices, routes and rules it programmed
  weft agent status --state-dir DIR [--json]     own lease, remote leases, desired vs programmed`;

export async function agentCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'status') return statusCommand(argv.slice(1));
  const { values } = parseArgs({
    args: argv,
    options: {
      ...ETCD_OPTIONS,
      node: { type: 'string' },
      iface: { type: 'string' },
      'public-ip': { type: 'string' },
      'subnet-file': { type: 'string', default: DEFAULT_SUBNET_FILE },
      'state-dir': { type: 'string' },
      'lease-ttl': { type: 'string' },
      resync: { type: 'string', default: '10' },
      'cni-socket': { type: 'string' },
      'no-ip-masq': { type: 'boolean' },
      cleanup: { type: 'boolean' },
      'log-format': { type: 'string', default: 'text' },
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(AGENT_USAGE);
    return 0;
  }
  const format = values['log-format'];
  const level = values['log-level'];
  if (format !== 'text' && format !== 'json') throw new UsageError('--log-format is text or json');
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new UsageError('--log-level is debug, info, warn or error');
  const log = createLogger({ format, level: level as Level, ...(values.node ? { base: { node: values.node } } : {}) });

  if (values.cleanup) {
    const lease = values['etcd-endpoints']
      ? {
          etcd: etcdOf(values, 'agent --cleanup'),
          node: values.node ?? '',
          ...(values.iface ? { iface: values.iface } : {}),
          ...(values['public-ip'] ? { publicIP: values['public-ip'] } : {}),
        }
      : undefined;
    const changes = await cleanup(values['subnet-file'], log, lease);
    if (changes.length === 0) log.info('nothing to clean up');
    return 0;
  }
  if (!values.node) throw new UsageError('agent needs --node NAME');
  if (!values['state-dir']) throw new UsageError('agent needs --state-dir DIR (for its status socket and VtepMAC)');
  const seconds = (flag: string, text: string | undefined, min: number): number | undefined => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) throw new UsageError(`${flag} must be a number of seconds, at least ${min}`);
    return n;
  };
  const ttl = seconds('--lease-ttl', values['lease-ttl'], 2);
  if (ttl !== undefined && !Number.isInteger(ttl)) throw new UsageError('--lease-ttl must be a whole number of seconds');
  const etcd = etcdOf(values, 'agent');
  const agent = new Agent({
    node: values.node,
    ...(values.iface ? { iface: values.iface } : {}),
    ...(values['public-ip'] ? { publicIP: values['public-ip'] } : {}),
    etcdEndpoints: etcd.endpoints,
    etcdPrefix: etcd.prefix,
    ...(etcd.tls ? { etcdTls: etcd.tls } : {}),
    subnetFile: values['subnet-file'],
    stateDir: values['state-dir'],
    ...(ttl !== undefined ? { leaseTtlSeconds: ttl } : {}),
    resyncSeconds: seconds('--resync', values.resync, 0.1)!,
    ...(values['cni-socket'] ? { cniSocket: values['cni-socket'] } : {}),
    ipMasq: !values['no-ip-masq'],
    log,
  });
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

async function statusCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { 'state-dir': { type: 'string' }, json: { type: 'boolean' } } });
  if (!values['state-dir']) throw new UsageError('agent status needs --state-dir DIR (the agent\'s)');
  const { status, note } = await readStatus(values['state-dir']);
  console.log(values.json ? JSON.stringify(note ? { ...status, note } : status, null, 2) : formatStatus(status, note));
  return 0;
}

export async function networkCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'init') throw new UsageError(`unknown network command "${sub ?? ''}"; try: weft network init --config JSON|FILE --etcd-endpoints URL`);
  const { values } = parseArgs({ args: rest, options: { ...ETCD_OPTIONS, config: { type: 'string' }, force: { type: 'boolean' } } });
  const arg = values.config;
  if (!arg) throw new UsageError('network init needs --config JSON|FILE, e.g. --config \'{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}\'');
  let text = arg;
  if (!arg.trimStart().startsWith('{')) {
    if (!existsSync(arg)) throw new UsageError(`--config ${arg} is neither JSON (it does not start with "{") nor an existing file`);
    text = readFileSync(arg, 'utf8');
  }
  try {
    parseNetworkConfig(text);
  } catch (err) {
    if (err instanceof NetworkConfigError) {
      console.error(`weft: ${err.message}${err.field ? ` [field ${err.field}]` : ''}`);
      return 1;
    }
    throw err;
  }
  const etcd = etcdOf(values, 'network init');
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
      if (!same && !values.force) {
        console.error(`weft: ${etcd.prefix}/${CONFIG_KEY} already holds a different config:\n${existing.value}\nchanging the network under running nodes strands their pods; pass --force to replace it`);
        return 1;
      }
    }
    if (existing?.value === text) {
      console.log(`${etcd.prefix}/${CONFIG_KEY} already holds this config`);
      return 0;
    }
    await store.put(CONFIG_KEY, text);
    console.log(`wrote ${etcd.prefix}/${CONFIG_KEY}`);
    return 0;
  } finally {
    await store.close();
  }
}

export { AgentError };
