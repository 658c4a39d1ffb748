import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import type { NodeInfo } from '../backend/types.js';
import { parseCidr } from '../ip/cidr.js';
import { addrs, links, routes } from '../kernel/state.js';

export type AgentErrorCode = 'no-such-iface' | 'no-public-ip' | 'bad-option' | 'lease-taken' | 'fatal';

/** A problem the operator must fix; the message says what to do. */
export class AgentError extends Error {
  override name = 'AgentError';
  constructor(
    readonly code: AgentErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Finds the underlay interface and the PublicIP in this process's namespace, as flanneld does:
 * --iface picks the device (its first IPv4 address is the PublicIP unless --public-ip says
 * otherwise); --public-ip alone picks the device holding it; neither picks the default route's device.
 */
export async function discoverNode(name: string, iface?: string, publicIP?: string): Promise<NodeInfo> {
  if (publicIP !== undefined && !isIPv4(publicIP)) throw new AgentError('bad-option', `--public-ip ${publicIP} is not an IPv4 address`);
  const [linkList, addrList] = await Promise.all([links(undefined), addrs(undefined)]);
  const v4 = (dev: string) =>
    addrList.find((a) => a.ifname === dev)?.addr_info.filter((i) => i.family === 'inet' && !i.local.startsWith('127.')) ?? [];
  let dev = iface;
  if (dev === undefined && publicIP !== undefined) dev = addrList.find((a) => a.addr_info.some((i) => i.local === publicIP))?.ifname;
  if (dev === undefined) {
    const def = (await routes(undefined)).find((r) => r.dst === 'default');
    dev = def?.dev;
    if (dev === undefined) {
      throw new AgentError('no-such-iface', 'no default route to pick the underlay interface from; pass --iface DEV (the interface other nodes reach this one on)');
    }
  }
  const link = linkList.find((l) => l.ifname === dev);
  if (!link) {
    const names = linkList.map((l) => l.ifname).join(', ');
    throw new AgentError('no-such-iface', `interface ${dev} does not exist in this network namespace (it has: ${names}); pass the right --iface`);
  }
  const own = v4(dev);
  const ip = publicIP ?? own[0]?.local;
  if (ip === undefined) throw new AgentError('no-public-ip', `interface ${dev} has no IPv4 address; give it one or pass --public-ip`);
  return { name, iface: dev, ifaceMtu: link.mtu, publicIP: ip, ifaceNets: own.map((a) => parseCidr(`${a.local}/${a.prefixlen}`)) };
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

/**
 * The VXLAN device's MAC (VtepMAC), kept in the state dir so a restart, or a device deleted by
 * hand and recreated, keeps the MAC other nodes have in their neighbour and fdb entries.
 * First start: the existing device's MAC if there is one (taking over from flanneld), else random.
 */
export function stableVtepMac(stateDir: string, existing?: string): string {
  const file = join(stateDir, 'vtep-mac');
  try {
    const saved = readFileSync(file, 'utf8').trim().toLowerCase();
    if (MAC.test(saved)) return saved;
  } catch {
    // first start
  }
  let mac = existing?.toLowerCase();
  if (!mac || !MAC.test(mac)) {
    const b = randomBytes(6);
    b[0] = (b[0]! & 0xfe) | 0x02; // unicast, locally administered
    mac = [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
  }
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(`${file}.tmp`, `${mac}\n`);
  renameSync(`${file}.tmp`, file);
  return mac;
}
