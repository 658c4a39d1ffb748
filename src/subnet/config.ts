import { contains, formatAddr, formatNetwork, mask, nthSubnet, overlaps, parseAddr, parseCidr, subnetCount, type Cidr } from '../ip/cidr.js';

/** flannel's network config (`<prefix>/config`), validated, with flannel's defaults filled in. */
export interface NetworkConfig {
  network: Cidr;
  subnetLen: number;
  /** First and last subnet a node may lease (both /subnetLen, inclusive). */
  subnetMin: Cidr;
  subnetMax: Cidr;
  backend: BackendConfig;
}

export type BackendConfig =
  | { type: 'vxlan'; vni: number; port: number; directRouting: boolean; mtu?: number }
  | { type: 'host-gw'; mtu?: number }
  | { type: 'udp'; port: number; mtu?: number };

export class NetworkConfigError extends Error {
  override name = 'NetworkConfigError';
  readonly code = 'invalid-network-config';
  /** The offending field, e.g. `SubnetLen` or `Backend.VNI`. */
  readonly field: string;

  constructor(field: string, message: string) {
    super(`network config: ${message}`);
    this.field = field;
  }
}

const EXAMPLE = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}';
// EnableNFTables is accepted and has no effect: Weft always programs nftables.
const TOP_LEVEL = ['Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'EnableIPv4', 'EnableIPv6', 'EnableNFTables', 'Backend'];
const IPV6_FIELDS = ['IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax'];
const BACKEND_FIELDS: Record<BackendConfig['type'], string[]> = {
  vxlan: ['Type', 'VNI', 'Port', 'DirectRouting', 'MTU', 'GBP', 'Learning'],
  'host-gw': ['Type', 'MTU'],
  udp: ['Type', 'Port', 'MTU'],
};
const VXLAN_DEFAULT_VNI = 1;
const VXLAN_DEFAULT_PORT = 8472;
const UDP_DEFAULT_PORT = 8285;
/** Ranges a pod Network must stay out of, whatever the node. */
const RESERVED: [Cidr, string][] = [
  [parseCidr('127.0.0.0/8'), 'loopback'],
  [parseCidr('169.254.0.0/16'), 'link-local'],
  [parseCidr('224.0.0.0/4'), 'multicast'],
];

type Json = Record<string, unknown>;

export function parseNetworkConfig(text: string): NetworkConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new NetworkConfigError('', `not valid JSON (${(err as Error).message}); write an object such as ${EXAMPLE}`);
  }
  if (!isObject(doc)) throw new NetworkConfigError('', `must be a JSON object such as ${EXAMPLE}`);

  for (const field of Object.keys(doc)) {
    if (IPV6_FIELDS.includes(field)) {
      throw new NetworkConfigError(field, `${field} is not supported: Weft pod networks are IPv4 only; remove it`);
    }
    if (!TOP_LEVEL.includes(field)) {
      throw new NetworkConfigError(field, `unknown field ${field}; the fields are ${TOP_LEVEL.join(', ')} (names are case-sensitive)`);
    }
  }
  if (optionalBoolean(doc, 'EnableIPv4', 'EnableIPv4') === false) {
    throw new NetworkConfigError('EnableIPv4', 'EnableIPv4 false is not supported: Weft pod networks are IPv4 only; remove the field');
  }
  if (optionalBoolean(doc, 'EnableIPv6', 'EnableIPv6') === true) {
    throw new NetworkConfigError('EnableIPv6', 'EnableIPv6 is not supported: Weft pod networks are IPv4 only; remove it or set it to false');
  }

  const network = parseNetwork(doc['Network']);
  const subnetLen = parseSubnetLen(doc['SubnetLen'], network);
  const subnetMin = parseBound(doc, 'SubnetMin', network, subnetLen) ?? nthSubnet(network, subnetLen, 1n);
  const subnetMax = parseBound(doc, 'SubnetMax', network, subnetLen) ?? nthSubnet(network, subnetLen, subnetCount(network, subnetLen) - 1n);
  if (subnetMin.base > subnetMax.base) {
    const [min, max] = [subnetMin, subnetMax].map((c) => formatAddr({ family: 4, value: c.base }));
    throw new NetworkConfigError('SubnetMin', `SubnetMin ${min} is above SubnetMax ${max}; swap them or widen the range`);
  }
  return { network, subnetLen, subnetMin, subnetMax, backend: parseBackend(doc['Backend']) };
}

function parseNetwork(value: unknown): Cidr {
  if (value === undefined) throw new NetworkConfigError('Network', `Network is missing; set the pod network as an IPv4 CIDR, e.g. ${EXAMPLE}`);
  if (typeof value !== 'string') throw new NetworkConfigError('Network', `Network must be a string such as "10.244.0.0/16"`);
  let network: Cidr;
  try {
    network = parseCidr(value);
  } catch {
    throw new NetworkConfigError('Network', `Network "${value}" is not a CIDR; write it as ADDRESS/PREFIX, e.g. "10.244.0.0/16"`);
  }
  if (network.family !== 4) throw new NetworkConfigError('Network', `Network "${value}" is IPv6; Weft pod networks are IPv4 only`);
  if (network.ip !== network.base) {
    throw new NetworkConfigError('Network', `Network "${value}" has host bits set; did you mean "${formatNetwork(network)}"?`);
  }
  if (network.prefix === 0) {
    throw new NetworkConfigError(
      'Network',
      `Network ${value} is every address: pod routes would take over the default route; use a private range such as 10.244.0.0/16`,
    );
  }
  for (const [range, what] of RESERVED) {
    if (overlaps(network, range)) {
      throw new NetworkConfigError(
        'Network',
        `Network ${value} overlaps the ${what} range ${formatNetwork(range)}, which cannot carry pod traffic; use a private range such as 10.244.0.0/16`,
      );
    }
  }
  return network;
}

/** flannel: an explicit SubnetLen must leave room for four subnets; otherwise /24, or a quarter of a small Network. */
function parseSubnetLen(value: unknown, network: Cidr): number {
  const text = formatNetwork(network);
  if (value === undefined || value === 0) {
    if (network.prefix > 28) {
      throw new NetworkConfigError('Network', `Network ${text} is too small; use a /28 or larger so it holds four subnets of four addresses`);
    }
    return network.prefix <= 22 ? 24 : network.prefix + 2;
  }
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new NetworkConfigError('SubnetLen', `SubnetLen must be a whole number (the prefix length of each node's subnet, e.g. 24)`);
  }
  if (value > 30) {
    throw new NetworkConfigError('SubnetLen', `SubnetLen ${value} is too long; each node needs at least a /30, so use 30 or less`);
  }
  if (value < network.prefix + 2) {
    throw new NetworkConfigError(
      'SubnetLen',
      `SubnetLen ${value} leaves Network ${text} fewer than four subnets; use ${network.prefix + 2} or more, or a larger Network`,
    );
  }
  return value;
}

function parseBound(doc: Json, field: 'SubnetMin' | 'SubnetMax', network: Cidr, subnetLen: number): Cidr | undefined {
  const value = doc[field];
  if (value === undefined) return undefined;
  const example = formatAddr({ family: 4, value: nthSubnet(network, subnetLen, 1n).base });
  if (typeof value !== 'string') throw new NetworkConfigError(field, `${field} must be a string holding an IPv4 address, e.g. "${example}"`);
  const addr = parseIPv4(value);
  if (addr === undefined) {
    throw new NetworkConfigError(field, `${field} "${value}" is not an IPv4 address; write the subnet's first address, e.g. "${example}"`);
  }
  if (!contains(network, { family: 4, value: addr })) {
    throw new NetworkConfigError(field, `${field} ${value} is outside Network ${formatNetwork(network)}; pick an address inside it`);
  }
  const aligned = addr & mask(4, subnetLen);
  if (aligned !== addr) {
    throw new NetworkConfigError(field, `${field} ${value} is not the start of a /${subnetLen} subnet; use ${formatAddr({ family: 4, value: aligned })}`);
  }
  return { family: 4, ip: addr, base: addr, prefix: subnetLen };
}

function parseBackend(value: unknown): BackendConfig {
  // flannel runs the udp backend when the config names none.
  if (value === undefined) return { type: 'udp', port: UDP_DEFAULT_PORT };
  if (!isObject(value)) throw new NetworkConfigError('Backend', `Backend must be an object such as {"Type": "vxlan"}`);
  const type = value['Type'];
  if (type === undefined) throw new NetworkConfigError('Backend.Type', 'Backend.Type is missing; set it to "vxlan", "host-gw" or "udp"');
  if (type !== 'vxlan' && type !== 'host-gw' && type !== 'udp') {
    throw new NetworkConfigError('Backend.Type', `Backend.Type ${JSON.stringify(type)} is not supported; use "vxlan", "host-gw" or "udp"`);
  }
  for (const field of Object.keys(value)) {
    if (!BACKEND_FIELDS[type].includes(field)) {
      throw new NetworkConfigError(
        `Backend.${field}`,
        `Backend.${field} does not apply to the ${type} backend; its fields are ${BACKEND_FIELDS[type].join(', ')}`,
      );
    }
  }
  const mtu = optionalInteger(value, 'MTU', 68, 65535);
  const withMtu = mtu === undefined ? {} : { mtu };
  switch (type) {
    case 'vxlan':
      for (const field of ['GBP', 'Learning']) {
        if (optionalBoolean(value, field, `Backend.${field}`) === true) {
          throw new NetworkConfigError(`Backend.${field}`, `Backend.${field} is not supported by Weft; remove it or set it to false`);
        }
      }
      return {
        type,
        vni: optionalInteger(value, 'VNI', 0, 16777215) ?? VXLAN_DEFAULT_VNI,
        port: optionalInteger(value, 'Port', 1, 65535) ?? VXLAN_DEFAULT_PORT,
        directRouting: optionalBoolean(value, 'DirectRouting', 'Backend.DirectRouting') ?? false,
        ...withMtu,
      };
    case 'udp':
      return { type, port: optionalInteger(value, 'Port', 1, 65535) ?? UDP_DEFAULT_PORT, ...withMtu };
    case 'host-gw':
      return { type, ...withMtu };
  }
}

function optionalInteger(obj: Json, field: string, min: number, max: number): number | undefined {
  const value = obj[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new NetworkConfigError(`Backend.${field}`, `Backend.${field} must be a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
  }
  return value;
}

function optionalBoolean(obj: Json, field: string, path: string): boolean | undefined {
  const value = obj[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw new NetworkConfigError(path, `${path} must be true or false (got ${JSON.stringify(value)})`);
  return value;
}

function parseIPv4(text: string): bigint | undefined {
  try {
    const addr = parseAddr(text);
    return addr.family === 4 ? addr.value : undefined;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
