import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetns, deleteNetns, netnsPath, netnsPids, signalNetns } from '../kernel/netns.js';
import { apply, Plan } from '../kernel/plan.js';
import { writeFileAtomic } from '../util/file.js';
import { waitFor } from '../util/wait.js';
import { AGENT_METRICS_PORT, joinUnderlay, plugIn, presentMembers } from './build.js';
import { daemon, interrupted, until } from './procs.js';
import { labDir, LabError, nsName, update, type LabState, type Monitoring } from './state.js';

/**
 * `weft lab up --monitoring`: a real Prometheus (Debian's `prometheus`) in its own namespace on the
 * lab's underlay switch, scraping every node's agent on `<node ip>:9402` every 2 s. Its targets are a
 * file_sd file that `node add`/`node rm` rewrite under the lab's lock; Prometheus notices the change
 * itself. The root namespace never joins the underlay, so a forwarder (forward-main.ts) in the
 * monitoring namespace accepts on a unix socket in the lab dir and connects to Prometheus: the CLI and
 * the web view talk HTTP over that socket (`promQuery`).
 *
 *   monitoring (198.18.0.3) ─ underlay: br0 ─ node eth0 198.18.0.(10+N):9402
 *      prometheus :9090 ◄── forwarder ◄── /run/weft/lab/<lab>/monitoring/prometheus.sock ◄── root ns
 */
export const MONITORING_ROLE = 'monitoring';
const MONITORING_IP = '198.18.0.3';
const PROMETHEUS_PORT = 9090;
const SCRAPE_INTERVAL = '2s';
const FORWARDER = fileURLToPath(new URL('./forward-main.js', import.meta.url));

export function monitoringFiles(lab: string) {
  const dir = join(labDir(lab), 'monitoring');
  return {
    dir,
    config: join(dir, 'prometheus.yml'),
    targets: join(dir, 'agents.json'),
    data: join(dir, 'data'),
    log: join(dir, 'prometheus.log'),
    forwarderLog: join(dir, 'forwarder.log'),
    socket: join(dir, 'prometheus.sock'),
  };
}

export const newMonitoring = (lab: string): Monitoring => ({
  ns: nsName(lab, MONITORING_ROLE),
  ip: MONITORING_IP,
  port: PROMETHEUS_PORT,
  socket: monitoringFiles(lab).socket,
});

/** The monitoring namespace's port on the underlay switch. */
export function monitoringPlan(s: LabState, m: Monitoring): Plan {
  const plan = new Plan();
  plugIn(plan, s, m.ns, MONITORING_ROLE, m.ip);
  return plan;
}

export function prometheusConfig(s: LabState): string {
  // yaml loads here only (about a quarter of a second), not with every lab command.
  const { stringify } = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return stringify({
    global: { scrape_interval: SCRAPE_INTERVAL, scrape_timeout: SCRAPE_INTERVAL },
    scrape_configs: [{ job_name: 'weft-agent', file_sd_configs: [{ files: [monitoringFiles(s.name).targets], refresh_interval: '5s' }] }],
  });
}

/** Prometheus's file_sd targets: every node that is not half made, labelled with its name. */
export const agentTargets = (s: LabState) =>
  s.nodes.filter((n) => !n.pending).map((n) => ({ targets: [`${n.ip}:${AGENT_METRICS_PORT}`], labels: { node: n.name } }));

/** Rewrites the targets file from `s` when the lab has monitoring; call it inside `update` so writers never race. */
export function writeTargets(s: LabState): void {
  if (!s.monitoring) return;
  const f = monitoringFiles(s.name);
  mkdirSync(f.dir, { recursive: true });
  writeFileAtomic(f.targets, `${JSON.stringify(agentTargets(s), null, 2)}\n`, { durable: false });
}

export function prometheusArgv(s: LabState, m: Monitoring): string[] {
  const f = monitoringFiles(s.name);
  return [
    'prometheus',
    `--config.file=${f.config}`,
    `--storage.tsdb.path=${f.data}`,
    '--storage.tsdb.retention.time=1d',
    `--web.listen-address=${m.ip}:${m.port}`,
  ];
}

export const forwarderArgv = (m: Monitoring) => [process.execPath, FORWARDER, m.socket, m.ip, String(m.port)];

/** One GET over the lab's Prometheus socket: the status code and the body. */
function get(m: Monitoring, path: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: m.socket, path, headers: { host: `${m.ip}:${m.port}` }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

const noMonitoring = (s: LabState) =>
  new LabError('no-monitoring', `lab ${s.name} runs no Prometheus; start one with: weft lab up --monitoring${s.name === 'weft' ? '' : ` --name ${s.name}`}`);

/**
 * GET `path` of the lab's Prometheus HTTP API (e.g. `/api/v1/query?query=up`) over its socket and
 * return the reply's `data`; Prometheus's own error (a bad query) is thrown with its text.
 */
export async function promQuery(s: LabState, path: string): Promise<unknown> {
  if (!s.monitoring) throw noMonitoring(s);
  let r: { status: number; body: string };
  try {
    r = await get(s.monitoring, path);
  } catch (e) {
    throw new LabError('monitoring', `Prometheus of lab ${s.name} did not answer on ${s.monitoring.socket}: ${(e as Error).message}`);
  }
  let reply: { status?: string; data?: unknown; error?: string };
  try {
    reply = JSON.parse(r.body) as typeof reply;
  } catch {
    throw new LabError('monitoring', `Prometheus of lab ${s.name} answered ${path} with HTTP ${r.status} and no JSON: ${r.body.slice(0, 200)}`);
  }
  if (reply.status !== 'success') throw new LabError('monitoring', `Prometheus of lab ${s.name} refused ${path}: ${reply.error ?? `HTTP ${r.status}`}`);
  return reply.data;
}

const ready = async (m: Monitoring) => (await get(m, '/-/ready', 2000).catch(() => undefined))?.status === 200;

export interface MonitoringStatus {
  ready: boolean;
  /** How many of the lab's agents answered Prometheus's last scrape (a new target counts as down until its first). */
  agents?: { up: number; total: number };
}

export async function monitoringStatus(s: LabState): Promise<MonitoringStatus> {
  if (!s.monitoring || !(await ready(s.monitoring))) return { ready: false };
  const targets = (await promQuery(s, '/api/v1/targets?state=active').catch(() => undefined)) as
    { activeTargets?: { health: string; labels: { node?: string } }[] } | undefined;
  const active = targets?.activeTargets;
  if (!active) return { ready: true };
  const nodes = agentTargets(s).map((t) => t.labels.node);
  const up = active.filter((t) => t.health === 'up' && nodes.includes(t.labels.node ?? '')).length;
  return { ready: true, agents: { up, total: nodes.length } };
}

/** Prometheus and its forwarder in the monitoring namespace (made again if it is gone); ready once Prometheus answers through the socket. */
async function start(s: LabState, m: Monitoring, signal?: AbortSignal): Promise<void> {
  const f = monitoringFiles(s.name);
  if (!existsSync(netnsPath(m.ns))) {
    await createNetns(m.ns);
    await apply(monitoringPlan(s, m));
    await apply(joinUnderlay(new Plan(), presentMembers(s), [{ ns: m.ns, ip: m.ip }]));
  }
  interrupted(signal);
  mkdirSync(f.data, { recursive: true });
  writeFileAtomic(f.config, prometheusConfig(s));
  await update(s, writeTargets);
  rmSync(m.socket, { force: true });
  const prometheus = daemon(m.ns, prometheusArgv(s, m), f.log);
  const forwarder = daemon(m.ns, forwarderArgv(m), f.forwarderLog);
  await until('the forwarder to Prometheus', () => existsSync(m.socket), { timeoutMs: 10_000, log: f.forwarderLog, signal, daemon: forwarder });
  await until(`Prometheus on ${m.ip}:${m.port}`, () => ready(m), { timeoutMs: 30_000, log: f.log, signal, daemon: prometheus });
}

/**
 * Adds monitoring to the lab: records it under the lab's lock first, so that a concurrent `node add`
 * either writes the targets itself or is in them, then makes it. A failure removes what it made.
 */
export async function addMonitoring(s: LabState, signal?: AbortSignal): Promise<Monitoring> {
  if (s.backend === 'macvlan') throw new LabError('no-agents', `lab ${s.name} runs in underlay mode: it has no agents for Prometheus to scrape`);
  const m = await update(s, (f) => {
    if (f.monitoring) throw new LabError('exists', `lab ${f.name} already runs Prometheus at ${f.monitoring.ip}:${f.monitoring.port}`);
    if ([...f.nodes, ...f.pods].some((x) => x.name === MONITORING_ROLE)) {
      throw new LabError('exists', `lab ${f.name} has a node or pod named ${MONITORING_ROLE}, the namespace Prometheus would take; remove it first`);
    }
    f.monitoring = newMonitoring(f.name);
    return f.monitoring;
  });
  try {
    await start(s, m, signal);
    return m;
  } catch (e) {
    // The record goes first: a node add after it no longer writes targets into the dir removed here.
    await update(s, (f) => delete f.monitoring);
    await deleteNetns(m.ns);
    rmSync(monitoringFiles(s.name).dir, { recursive: true, force: true });
    throw e;
  }
}

/** For `lab up` on a lab that exists: true when Prometheus had to be started again. */
export async function reviveMonitoring(s: LabState, signal?: AbortSignal): Promise<boolean> {
  const m = s.monitoring;
  if (!m || (await ready(m))) return false;
  if (existsSync(netnsPath(m.ns))) {
    // A forwarder without its Prometheus (or a hung one) goes too: both start fresh.
    await signalNetns(m.ns, 'SIGKILL');
    await waitFor(async () => (await netnsPids(m.ns)).length === 0, { timeoutMs: 10_000, what: 'the old Prometheus processes to go' });
  }
  await start(s, m, signal);
  return true;
}
