import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KernelError } from '../kernel/errors.js';
import type { Netns } from '../kernel/exec.js';
import * as op from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { addrs, link, links, localLinkNames, routes } from '../kernel/state.js';
import { contains, formatNetwork, parseAddr, parseCidr, type Cidr } from '../ip/cidr.js';
import { execPlugin, findPlugin, pluginVersions } from './invoke.js';
import * as ipam from './ipam/ipam.js';
import { addMasq, deleteMasq, type MasqEntry } from './masq.js';
import { Code, CniError, decodeResult, validAttachments, type Attachment, type Env, type IPConfig, type NetConf, type Result } from './spec.js';

/** The weft plugin's own fields; everything else in the config passes through untouched. */
export interface BridgeConf {
  /** bridge: a veth to the node's bridge (overlay and routing); macvlan: a child of `master` (underlay). */
  mode: 'bridge' | 'macvlan';
  master?: string;
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  ipMasq: boolean;
  mtu?: number;
  hairpinMode: boolean;
  /** The IPAM plugin to exec, or undefined when weft-ipam runs in this process. */
  ipamPlugin?: string;
  ipamConfig?: ipam.IpamConfig;
}

const HOST: Netns = undefined;

/**
 * Reads the config. Without an `ipam` section the node's subnet comes from subnet.env, as flannel's
 * CNI plugin does it: the subnet's range, a route to the whole network, its MTU, isGateway, and
 * ipMasq unless the agent already masquerades (FLANNEL_IPMASQ=true).
 */
export function parseBridgeConf(conf: NetConf, env: Env): BridgeConf {
  const bool = (name: string, dflt: boolean): boolean => {
    const v = conf[name];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw new CniError(Code.InvalidConfig, `"${name}" must be true or false, not ${JSON.stringify(v)}`);
    return v;
  };
  const bridge = conf.bridge ?? 'cni0';
  if (typeof bridge !== 'string' || !/^[^/:\s]{1,15}$/.test(bridge)) {
    throw new CniError(Code.InvalidConfig, `"bridge" ${JSON.stringify(bridge)} is not a valid interface name`, 'use 1-15 characters without "/", ":" or whitespace');
  }
  let mtu: number | undefined;
  if (conf.mtu !== undefined) {
    if (typeof conf.mtu !== 'number' || !Number.isInteger(conf.mtu) || conf.mtu < 68 || conf.mtu > 65535) {
      throw new CniError(Code.InvalidConfig, `"mtu" ${JSON.stringify(conf.mtu)} is invalid`, 'use a whole number from 68 to 65535');
    }
    mtu = conf.mtu;
  }
  const mode = conf.mode ?? 'bridge';
  if (mode !== 'bridge' && mode !== 'macvlan') throw new CniError(Code.InvalidConfig, `"mode" ${JSON.stringify(mode)} is not supported`, 'use "bridge" (default) or "macvlan"');
  const out: BridgeConf = {
    mode,
    bridge,
    isGateway: bool('isGateway', false),
    isDefaultGateway: bool('isDefaultGateway', false),
    ipMasq: bool('ipMasq', false),
    hairpinMode: bool('hairpinMode', false),
  };
  if (out.isDefaultGateway && mode === 'bridge') out.isGateway = true;
  if (mode === 'macvlan') {
    if (typeof conf.master !== 'string' || conf.master === '') {
      throw new CniError(Code.InvalidConfig, 'macvlan mode needs "master"', 'name the node\'s underlay interface, e.g. "master": "eth0"');
    }
    if (env.command === 'ADD' && !localLinkNames().has(conf.master)) {
      throw new CniError(Code.InvalidConfig, `"master" ${conf.master} does not exist in this namespace`, 'name the node\'s underlay interface');
    }
    if (out.ipMasq || out.isGateway || out.hairpinMode) {
      throw new CniError(Code.InvalidConfig, 'ipMasq, isGateway and hairpinMode do not apply to macvlan mode', 'pods sit on the underlay itself: remove them');
    }
    out.master = conf.master;
  }
  const ipamSection = conf.ipam;
  if (ipamSection && ipamSection.type !== 'weft-ipam') {
    if (typeof ipamSection.type !== 'string') throw new CniError(Code.InvalidConfig, '"ipam.type" is missing', 'name an IPAM plugin, e.g. "host-local" or "weft-ipam"');
    if (env.command !== 'GC' && env.command !== 'STATUS') out.ipamPlugin = findPlugin(ipamSection.type, env.path);
    else out.ipamPlugin = ipamSection.type;
  } else if (ipamSection) {
    out.ipamConfig = ipam.parseIpamConfig(ipamSection, conf.name);
  } else {
    const subnetFile = typeof conf.subnetFile === 'string' ? conf.subnetFile : ipam.DEFAULT_SUBNET_FILE;
    const flannel = ipam.readSubnetFile(subnetFile);
    const section: Record<string, unknown> = { subnetFile };
    if (typeof conf.dataDir === 'string') section.dataDir = conf.dataDir;
    out.ipamConfig = ipam.parseIpamConfig(section, conf.name);
    mtu ??= flannel.mtu;
    if (conf.isGateway === undefined) out.isGateway = true;
    if (conf.ipMasq === undefined) out.ipMasq = !flannel.ipMasq;
  }
  if (mtu !== undefined) out.mtu = mtu;
  return out;
}

/** `veth` + 8 hex digits like the reference plugin, but derived, so DEL and GC find it again. */
export function hostVethName(containerId: string, ifname: string): string {
  return `veth${createHash('sha256').update(`${containerId}/${ifname}`).digest('hex').slice(0, 8)}`;
}

const alias = (network: string, a: Attachment) => `weft:${network}:${a.containerID}:${a.ifname}`;

function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

async function ipamAdd(c: BridgeConf, conf: NetConf, env: Env, att: Attachment): Promise<Result> {
  if (c.ipamConfig) return ipam.allocate(c.ipamConfig, att);
  const raw = await execPlugin(c.ipamPlugin!, { ...invokeEnv(env), command: 'ADD' }, conf);
  const r = decodeResult(raw);
  if (!r.ips?.length) throw new CniError(Code.Ipam, `IPAM plugin ${conf.ipam?.type} returned no IP addresses`);
  return r;
}

function invokeEnv(env: Env) {
  return { command: env.command, containerId: env.containerId, netns: env.netns, ifname: env.ifname, args: [...env.args].map(([k, v]) => `${k}=${v}`).join(';'), path: env.path };
}

/**
 * ADD: IPAM first, then one batch in the host namespace (bridge, veth pair created straight into the
 * container, attach) and one in the container (addresses, link up, routes). Anything that fails
 * undoes the veth and the allocation, so nothing is left half-done.
 */
export async function add(conf: NetConf, env: Env): Promise<Result> {
  if (!existsSync(env.netns)) {
    throw new CniError(Code.UnknownContainer, `network namespace ${env.netns} does not exist`, 'create the container namespace first, or pass its path in CNI_NETNS');
  }
  const c = parseBridgeConf(conf, env);
  const att = { containerID: env.containerId, ifname: env.ifname };
  const hostVeth = hostVethName(env.containerId, env.ifname);
  // The rollback below deletes hostVeth, so it must be ours: free before we start.
  if (c.mode === 'bridge' && localLinkNames().has(hostVeth)) {
    throw new CniError(Code.InterfaceExists, `${env.containerId}/${env.ifname} is already attached (host interface ${hostVeth} exists)`, 'DEL the attachment first');
  }
  const ipResult = await ipamAdd(c, conf, env, att);
  try {
    return await wire(c, conf, env, att, ipResult, hostVeth);
  } catch (e) {
    const undo = new Plan();
    if (c.mode === 'bridge') undo.add(op.delLink({ ns: HOST, dev: hostVeth, tolerate: 'missing' }));
    else if (!(e instanceof CniError && e.code === Code.InterfaceExists)) undo.add(op.delLink({ ns: env.netns, dev: env.ifname, tolerate: 'missing' }));
    await apply(undo).catch(() => undefined);
    await ipamRelease(teardownConf(conf), conf, env, att).catch(() => undefined);
    throw e;
  }
}

async function wire(c: BridgeConf, conf: NetConf, env: Env, att: Attachment, ipResult: Result, hostVeth: string): Promise<Result> {
  const ips = ipResult.ips!;
  const mtu = c.mtu === undefined ? {} : { mtu: c.mtu };
  const hostMac = randomMac();
  const podMac = randomMac();
  const plan = new Plan();
  if (c.mode === 'macvlan') {
    // Created straight into the container under its final name; the kernel checks the name there.
    plan.add(op.addMacvlan({ ns: HOST, name: env.ifname, parent: c.master!, ...mtu, mac: podMac, netns: env.netns }));
  } else {
    // The veth pair first: when CNI_IFNAME is taken in the container this fails before anything changed.
    plan.add(op.addVeth({ ns: HOST, name: hostVeth, ...mtu, mac: hostMac, peer: { name: env.ifname, ...mtu, mac: podMac, netns: env.netns } }));
    if (!localLinkNames().has(c.bridge)) {
      plan.add(op.addBridge({ ns: HOST, name: c.bridge, mac: randomMac(), ...mtu, tolerate: 'exists' }));
    }
    plan.add(op.setLink({ ns: HOST, dev: c.bridge, up: true }));
    if (c.isGateway) {
      for (const ip of ips) {
        if (ip.gateway) plan.add(op.replaceAddr({ ns: HOST, addr: `${ip.gateway}/${ip.address.split('/')[1]}`, dev: c.bridge }));
      }
    }
    plan.add(op.setLink({ ns: HOST, dev: hostVeth, master: c.bridge, alias: alias(conf.name, att), up: true, ...(c.hairpinMode ? { hairpin: true } : {}) }));
  }

  const pod = env.netns;
  for (const ip of ips) plan.add(op.addAddr({ ns: pod, addr: ip.address, dev: env.ifname }));
  plan.add(op.setLink({ ns: pod, dev: env.ifname, up: true }));
  const gw4 = ips.find((ip) => !ip.address.includes(':'))?.gateway;
  const routeList = [...(ipResult.routes ?? [])];
  if (c.isDefaultGateway && gw4 && !routeList.some((r) => r.dst === '0.0.0.0/0')) routeList.push({ dst: '0.0.0.0/0', gw: gw4 });
  for (const r of routeList) {
    const gw = r.gw ?? (r.dst.includes(':') ? undefined : gw4);
    plan.add(op.addRoute({ ns: pod, dst: r.dst, ...(gw ? { via: gw } : {}), dev: env.ifname }));
  }
  if (c.isGateway) plan.add(op.setSysctl({ ns: HOST, key: 'net.ipv4.ip_forward', value: '1' }));
  if (c.ipMasq) addMasq(plan, HOST, masqEntries({ ipMasq: true, ranges: [] }, ips));

  try {
    await apply(plan);
  } catch (e) {
    throw await explain(e, env, c.mode, hostVeth);
  }
  const podIf = { name: env.ifname, mac: podMac, ...(c.mtu ? { mtu: c.mtu } : {}), sandbox: env.netns };
  let interfaces;
  if (c.mode === 'macvlan') {
    interfaces = [podIf];
  } else {
    const bridgeMac = (await link(HOST, c.bridge))?.mac;
    interfaces = [{ name: c.bridge, ...(bridgeMac ? { mac: bridgeMac } : {}) }, { name: hostVeth, mac: hostMac }, podIf];
  }
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces,
    ips: ips.map((ip) => ({ ...ip, interface: interfaces.length - 1 })),
    routes: routeList,
  };
  if (ipResult.dns) result.dns = ipResult.dns;
  return result;
}

async function explain(e: unknown, env: Env, mode: BridgeConf['mode'], hostVeth: string): Promise<CniError> {
  if (!(e instanceof KernelError)) return e instanceof CniError ? e : new CniError(Code.Kernel, String(e));
  // If our device was not made but CNI_IFNAME is in the container, its creation is what failed:
  // the name was taken before us.
  if (e.kind === 'exists' && (mode === 'macvlan' || !localLinkNames().has(hostVeth))) {
    if (await link(env.netns, env.ifname).catch(() => undefined)) {
      return new CniError(Code.InterfaceExists, `interface ${env.ifname} already exists in ${env.netns}`, 'choose another CNI_IFNAME, or DEL the existing attachment first');
    }
  }
  return new CniError(Code.Kernel, e.message, e.detail.trim() || e.op);
}

/**
 * What DEL and GC need, read without failing on a subnet file that is already gone: DEL must succeed
 * then, and still release the address.
 */
interface Teardown {
  dataDir?: string;
  ipamType?: string;
  ipMasq: boolean;
  ranges: Cidr[];
}

function teardownConf(conf: NetConf): Teardown {
  const section = conf.ipam;
  if (section && section.type !== 'weft-ipam') return { ipamType: String(section.type), ipMasq: conf.ipMasq === true, ranges: [] };
  const dir = typeof section?.dataDir === 'string' ? section.dataDir : typeof conf.dataDir === 'string' ? conf.dataDir : ipam.DEFAULT_DATA_DIR;
  const out: Teardown = { dataDir: join(dir, conf.name), ipMasq: conf.ipMasq === true, ranges: [] };
  try {
    const parsed = ipam.parseIpamConfig(section ?? { subnetFile: conf.subnetFile ?? ipam.DEFAULT_SUBNET_FILE }, conf.name);
    out.ranges = parsed.rangesets.flat().map((r) => r.subnet);
    if (!section && conf.ipMasq === undefined) out.ipMasq = !ipam.readSubnetFile(String(conf.subnetFile ?? ipam.DEFAULT_SUBNET_FILE)).ipMasq;
  } catch (e) {
    if (!(e instanceof CniError)) throw e;
    // Without the subnet file we cannot tell whether ADD masqueraded; removing a missing element is harmless.
    if (!section && conf.ipMasq === undefined) out.ipMasq = true;
  }
  return out;
}

/** The masquerade elements of `ips`; the subnet comes from the address's prefix or the range holding it. */
function masqEntries(t: Teardown, ips: IPConfig[]): MasqEntry[] {
  return ips
    .filter((ip) => !ip.address.includes(':'))
    .map((ip) => {
      const [addr, prefix] = ip.address.split('/') as [string, string | undefined];
      if (prefix !== undefined) return { ip: addr, subnet: formatNetwork(parseCidr(ip.address)) };
      const range = t.ranges.find((r) => contains(r, parseAddr(addr)));
      return range ? { ip: addr, subnet: formatNetwork(range) } : { ip: addr };
    });
}

async function ipamRelease(t: Teardown, conf: NetConf, env: Env, att: Attachment): Promise<IPConfig[]> {
  if (t.dataDir) return (await ipam.release(t.dataDir, att)).map((address) => ({ address }));
  await execPlugin(findPlugin(t.ipamType!, env.path), { ...invokeEnv(env), command: 'DEL' }, conf);
  return decodeResult(conf.prevResult).ips ?? [];
}

/** DEL: idempotent; works without a netns and without prevResult, and always releases the IP. */
export async function del(conf: NetConf, env: Env): Promise<void> {
  const t = teardownConf(conf);
  const att = { containerID: env.containerId, ifname: env.ifname };
  // A delegated IPAM does not say what it released; without prevResult, the container's interface
  // (while it is still there) names the addresses to take out of the masquerade set.
  const inPod = t.ipMasq && t.ipamType && !decodeResult(conf.prevResult).ips?.length ? await podAddresses(env) : [];
  const plan = new Plan();
  if (conf.mode === 'macvlan') {
    if (env.netns && existsSync(env.netns)) plan.add(op.delLink({ ns: env.netns, dev: env.ifname, tolerate: 'missing' }));
  } else {
    plan.add(op.delLink({ ns: HOST, dev: hostVethName(env.containerId, env.ifname), tolerate: 'missing' }));
  }
  try {
    await apply(plan);
  } catch (e) {
    throw e instanceof KernelError ? new CniError(Code.Kernel, e.message, e.detail.trim() || e.op) : e;
  } finally {
    const released = await ipamRelease(t, conf, env, att);
    if (t.ipMasq) await apply(deleteMasq(new Plan(), HOST, masqEntries(t, released.length ? released : inPod)));
  }
}

async function podAddresses(env: Env): Promise<IPConfig[]> {
  if (!env.netns || !existsSync(env.netns)) return [];
  return (await addrs(env.netns, env.ifname).catch(() => [])).filter((a) => a.family === 4).map((a) => ({ address: `${a.address}/${a.prefix}` }));
}

/** CHECK: what ADD made is still there, as prevResult describes it. */
export async function check(conf: NetConf, env: Env): Promise<void> {
  if (conf.prevResult === undefined) throw new CniError(Code.InvalidConfig, 'CHECK needs prevResult', 'the runtime passes the cached ADD result as prevResult');
  if (!existsSync(env.netns)) throw new CniError(Code.UnknownContainer, `network namespace ${env.netns} does not exist`);
  const c = parseBridgeConf(conf, env);
  const prev = decodeResult(conf.prevResult);
  const att = { containerID: env.containerId, ifname: env.ifname };
  if (c.ipamConfig) ipam.verify(c.ipamConfig.dataDir, att, prev.ips ?? []);
  else await execPlugin(c.ipamPlugin!, { ...invokeEnv(env), command: 'CHECK' }, conf);

  const fail = (what: string) => {
    throw new CniError(Code.InvalidConfig, `CHECK failed for ${env.containerId}/${env.ifname}: ${what}`);
  };
  const podIf = prev.interfaces?.find((i) => i.name === env.ifname && i.sandbox);
  if (!podIf) fail(`prevResult has no interface ${env.ifname} with a sandbox`);
  const podLink = await link(env.netns, env.ifname).catch(() => undefined);
  if (!podLink) return fail(`interface ${env.ifname} is missing in ${env.netns}`);
  if (podIf!.mac && podLink.mac !== podIf!.mac) fail(`${env.ifname} has MAC ${podLink.mac}, prevResult says ${podIf!.mac}`);
  if (!podLink.up) fail(`${env.ifname} is down`);
  const podAddrs = await addrs(env.netns, env.ifname);
  for (const ip of prev.ips ?? []) {
    if (!podAddrs.some((a) => `${a.address}/${a.prefix}` === ip.address)) fail(`address ${ip.address} is missing on ${env.ifname}`);
  }
  const table = await routes(env.netns);
  for (const r of prev.routes ?? []) {
    const dst = r.dst === '0.0.0.0/0' ? 'default' : formatNetwork(parseCidr(r.dst));
    if (!r.dst.includes(':') && !table.some((t) => t.dst === dst && t.dev === env.ifname)) fail(`route to ${r.dst} is missing`);
  }
  if (c.mode === 'macvlan') return;
  const hostVeth = hostVethName(env.containerId, env.ifname);
  const host = await link(HOST, hostVeth);
  if (!host) fail(`host interface ${hostVeth} is missing`);
  if (host!.master !== c.bridge) fail(`host interface ${hostVeth} is not attached to ${c.bridge}`);
}

/** GC: frees every allocation and host veth of this network that no valid attachment owns. */
export async function gc(conf: NetConf, env: Env): Promise<void> {
  const valid = validAttachments(conf);
  const t = teardownConf(conf);
  const keep = new Set(valid.map((a) => alias(conf.name, a)));
  const prefix = `weft:${conf.name}:`;
  const plan = new Plan();
  for (const l of await links(HOST)) {
    if (l.alias?.startsWith(prefix) && !keep.has(l.alias)) plan.add(op.delLink({ ns: HOST, dev: l.name, tolerate: 'missing' }));
  }
  await apply(plan);
  if (t.dataDir) {
    const freed = await ipam.collect(t.dataDir, valid);
    // An ADD killed between creating the veth and naming it in its alias is found by its reservation.
    const orphans = new Plan();
    for (const r of freed) orphans.add(op.delLink({ ns: HOST, dev: hostVethName(r.containerId, r.ifname), tolerate: 'missing' }));
    if (t.ipMasq) deleteMasq(orphans, HOST, masqEntries(t, freed.map((r) => ({ address: r.ip }))));
    await apply(orphans);
    return;
  }
  // As libcni does, GC only an IPAM plugin that speaks spec 1.1.0 (host-local 1.1.1 does not).
  const plugin = findPlugin(t.ipamType!, env.path);
  if ((await pluginVersions(plugin)).includes('1.1.0')) await execPlugin(plugin, { command: 'GC', path: env.path }, conf);
}

/**
 * STATUS: ADD can succeed (subnet file readable, IPAM ready, a free address), else code 50. A
 * delegated IPAM plugin older than 1.1.0 cannot answer STATUS; only its 50/51 count.
 */
export async function status(conf: NetConf, env: Env): Promise<void> {
  const c = parseBridgeConf(conf, env);
  if (c.ipamConfig) {
    ipam.status(c.ipamConfig);
    return;
  }
  let plugin: string;
  try {
    plugin = findPlugin(c.ipamPlugin!, env.path);
  } catch (e) {
    // An IPAM plugin that is not installed is IPAM that cannot serve an ADD.
    throw e instanceof CniError ? new CniError(Code.NotAvailable, e.message, e.details) : e;
  }
  await execPlugin(plugin, { command: 'STATUS', path: env.path }, conf).catch((e: CniError) => {
    if (e.code === Code.NotAvailable || e.code === Code.NotAvailableLimited) throw e;
  });
}
