import { mkdirSync, readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import type { NodeInfo } from '../backend/types.js';
import { contains, formatAddr, formatNetwork, parseAddr, parseCidr } from '../ip/cidr.js';
import { addrs, links, routes } from '../kernel/state.js';
import type { NetworkConfig } from '../subnet/config.js';
import { writeFileAtomic } from '../util/file.js';
import { randomMac } from '../util/mac.js';

export type AgentErrorCode = 'no-such-iface' | 'no-public-ip' | 'bad-option' | 'bad-network' | 'lease-taken' | 'fatal';

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
 * A --public-ip no interface holds is allowed (a host behind NAT is reached at an address it does
 * not have) but `warn` hears about it.
 */
export async function discoverNode(
  name: string,
  iface?: string,
  publicIP?: string,
  warn?: (msg: string, fields?: Record<string, unknown>) => void,
): Promise<NodeInfo> {
  if (publicIP !== undefined && !isIPv4(publicIP)) throw new AgentError('bad-option', `--public-ip ${publicIP} is not an IPv4 address`);
  const [linkList, addrList] = await Promise.all([links(undefined), addrs(undefined)]);
  const v4 = (dev: string) => addrList.filter((a) => a.dev === dev && a.family === 4 && !a.address.startsWith('127.'));
  let dev = iface;
  const holder = publicIP === undefined ? undefined : addrList.find((a) => a.address === publicIP)?.dev;
  if (dev === undefined) dev = holder;
  if (dev === undefined) {
    const def = (await routes(undefined)).find((r) => r.dst === 'default');
    dev = def?.dev;
    if (dev === undefined) {
      throw new AgentError(
        'no-such-iface',
        'no default route to pick the underlay interface from; pass --iface DEV (the interface other nodes reach this one on)',
      );
    }
  }
  const link = linkList.find((l) => l.name === dev);
  if (!link) {
    const names = linkList.map((l) => l.name).join(', ');
    throw new AgentError('no-such-iface', `interface ${dev} does not exist in this network namespace (it has: ${names}); pass the right --iface`);
  }
  const own = v4(dev);
  const ip = publicIP ?? own[0]?.address;
  if (ip === undefined) throw new AgentError('no-public-ip', `interface ${dev} has no IPv4 address; give it one or pass --public-ip`);
  if (publicIP !== undefined && holder === undefined) {
    warn?.(`--public-ip ${publicIP} is not an address of this host; other nodes will send pod traffic to it, so it must reach this node (as behind NAT)`, {
      iface: dev,
    });
  }
  return { name, iface: dev, ifaceMtu: link.mtu, publicIP: ip, ifaceNets: own.map((a) => parseCidr(`${a.address}/${a.prefix}`)) };
}

/**
 * The checks of a Network that depend on the node: it must not contain this node's underlay
 * address (pod routes would capture the traffic between nodes). The node-independent checks
 * (loopback, multicast, ...) are in parseNetworkConfig.
 */
export function checkNetworkForNode(config: NetworkConfig, node: NodeInfo): void {
  const network = formatNetwork(config.network);
  const addresses = [node.publicIP, ...node.ifaceNets.map((n) => formatAddr({ family: 4, value: n.ip }))];
  for (const a of new Set(addresses)) {
    if (contains(config.network, parseAddr(a))) {
      const what = a === node.publicIP ? `this node's PublicIP ${a}` : `this node's address ${a} on ${node.iface}`;
      throw new AgentError(
        'bad-network',
        `network config: Network ${network} contains ${what}: pod routes would capture the traffic between nodes; choose a Network no node address is in (e.g. 10.244.0.0/16) and write it with weft network init --force`,
      );
    }
  }
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const VTEP_MAC_FILE = 'vtep-mac';

function savedVtepMac(stateDir: string): string | undefined {
  try {
    const saved = readFileSync(join(stateDir, VTEP_MAC_FILE), 'utf8').trim().toLowerCase();
    return MAC.test(saved) ? saved : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The VXLAN device's MAC (VtepMAC) and whether it is a new one: the one kept in the state dir (so
 * a restart, or a device deleted by hand and recreated, keeps the MAC other nodes have in their
 * neighbour and fdb entries), else the existing device's (taking over from flanneld), else random.
 * Reads only.
 */
export function chooseVtepMac(stateDir: string, existing?: string): { mac: string; fresh: boolean } {
  const saved = savedVtepMac(stateDir);
  if (saved) return { mac: saved, fresh: false };
  const mac = existing?.toLowerCase();
  if (mac && MAC.test(mac)) return { mac, fresh: false };
  return { mac: randomMac(), fresh: true };
}

/** chooseVtepMac, kept in the state dir for the next start. */
export function stableVtepMac(stateDir: string, existing?: string): string {
  const { mac } = chooseVtepMac(stateDir, existing);
  mkdirSync(stateDir, { recursive: true });
  writeFileAtomic(join(stateDir, VTEP_MAC_FILE), `${mac}\n`);
  return mac;
}
