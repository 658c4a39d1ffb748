/** flannel's lease schema in the store: keys, values, the network config key. */
import { isIPv4 } from 'node:net';
import { formatAddr, parseCidr, type Cidr } from '../ip/cidr.js';
import type { Store } from '../store/store.js';
import { parseNetworkConfig, type NetworkConfig } from './config.js';

/** What a node publishes about itself in its lease (flannel's LeaseAttrs). */
export interface LeaseAttrs {
  publicIP: string;
  /** flannel's udp backend leaves this out; vxlan and host-gw set it. */
  backendType?: string;
  /** Backend-specific JSON, e.g. {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"} for vxlan. */
  backendData?: unknown;
}

export interface Lease {
  subnet: Cidr;
  attrs: LeaseAttrs;
}

export type LeaseErrorCode = 'no-network-config' | 'out-of-subnets' | 'lease-contention' | 'invalid-lease-options';

export class LeaseError extends Error {
  override name = 'LeaseError';
  readonly code: LeaseErrorCode;

  constructor(code: LeaseErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export const CONFIG_KEY = 'config';
export const SUBNETS_PREFIX = 'subnets/';

/** flannel's key for a subnet: 10.244.3.0/24 → 10.244.3.0-24 (under `subnets/`). */
export function subnetKey(subnet: Cidr): string {
  return `${SUBNETS_PREFIX}${formatAddr({ family: 4, value: subnet.base })}-${subnet.prefix}`;
}

/** The subnet a key names, or undefined for anything that is not an IPv4 subnet key. */
export function parseSubnetKey(key: string): Cidr | undefined {
  const match = /^subnets\/(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(key);
  if (!match || !isIPv4(match[1]!)) return undefined;
  const prefix = Number(match[2]);
  if (prefix > 32) return undefined;
  const subnet = parseCidr(`${match[1]}/${prefix}`);
  return subnet.ip === subnet.base ? subnet : undefined;
}

/** The lease value exactly as flanneld writes it (field order and the null PublicIPv6 included). */
export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  return JSON.stringify({
    PublicIP: attrs.publicIP,
    PublicIPv6: null,
    ...(attrs.backendType !== undefined && { BackendType: attrs.backendType }),
    ...(attrs.backendData !== undefined && { BackendData: attrs.backendData }),
  });
}

export function decodeLeaseAttrs(text: string): LeaseAttrs | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { PublicIP, BackendType, BackendData } = value as Record<string, unknown>;
  if (typeof PublicIP !== 'string' || !isIPv4(PublicIP)) return undefined;
  if (BackendType !== undefined && typeof BackendType !== 'string') return undefined;
  return {
    publicIP: PublicIP,
    ...(BackendType !== undefined && { backendType: BackendType }),
    ...(BackendData !== undefined && { backendData: BackendData }),
  };
}

/** Reads and validates `<prefix>/config`. */
export async function readNetworkConfig(store: Store): Promise<NetworkConfig> {
  const kv = await store.get(CONFIG_KEY);
  if (!kv) {
    throw new LeaseError(
      'no-network-config',
      `no network config at "${CONFIG_KEY}" under the etcd prefix; write one first, e.g. ` +
        `etcdctl put <prefix>/config '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'`,
    );
  }
  return parseNetworkConfig(kv.value);
}
