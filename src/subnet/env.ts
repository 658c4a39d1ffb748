import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { formatCidr, formatNetwork, parseCidr, withAddr, type Cidr } from '../ip/cidr.js';
import { writeFileAtomic } from '../util/file.js';

/** The contents of flannel's subnet.env, which CNI plugins read to learn the node's pod subnet. */
export interface SubnetEnv {
  /** The whole pod network (FLANNEL_NETWORK). */
  network: Cidr;
  /** The node's leased subnet; the file holds its first host address (10.244.3.1/24), `base` is the subnet. */
  subnet: Cidr;
  mtu: number;
  ipMasq: boolean;
}

export class SubnetEnvError extends Error {
  override name = 'SubnetEnvError';
  readonly code = 'invalid-subnet-env';
}

export function formatSubnetEnv(env: SubnetEnv): string {
  return [
    `FLANNEL_NETWORK=${formatNetwork(env.network)}`,
    `FLANNEL_SUBNET=${formatCidr(withAddr(env.subnet, env.subnet.base + 1n))}`,
    `FLANNEL_MTU=${env.mtu}`,
    `FLANNEL_IPMASQ=${env.ipMasq}`,
    '',
  ].join('\n');
}

/** Writes the file so that a reader sees either the old or the new contents, never a mix. */
export async function writeSubnetEnv(path: string, env: SubnetEnv): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  writeFileAtomic(path, formatSubnetEnv(env));
}

/** The previous contents, or undefined when the file does not exist. */
export async function readSubnetEnv(path: string): Promise<SubnetEnv | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return parseSubnetEnv(text, path);
}

export function parseSubnetEnv(text: string, source = 'subnet.env'): SubnetEnv {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const eq = trimmed.indexOf('=');
    if (eq > 0) vars.set(trimmed.slice(0, eq), trimmed.slice(eq + 1));
  }
  const required = (name: string): string => {
    const value = vars.get(name);
    if (value === undefined) throw new SubnetEnvError(`${source}: ${name} is missing; delete the file and let the agent write it again`);
    return value;
  };
  const cidr = (name: string): Cidr => {
    const value = required(name);
    const parsed = tryParseCidr(value);
    if (parsed?.family !== 4) {
      throw new SubnetEnvError(`${source}: ${name}=${value} is not an IPv4 CIDR; delete the file and let the agent write it again`);
    }
    return parsed;
  };
  const network = cidr('FLANNEL_NETWORK');
  const subnet = cidr('FLANNEL_SUBNET');
  const mtuText = required('FLANNEL_MTU');
  const mtu = Number(mtuText);
  if (!/^\d+$/.test(mtuText) || mtu < 68) throw new SubnetEnvError(`${source}: FLANNEL_MTU=${mtuText} is not a valid MTU`);
  const ipMasqText = required('FLANNEL_IPMASQ');
  if (ipMasqText !== 'true' && ipMasqText !== 'false') {
    throw new SubnetEnvError(`${source}: FLANNEL_IPMASQ=${ipMasqText} must be true or false`);
  }
  return { network, subnet, mtu, ipMasq: ipMasqText === 'true' };
}

function tryParseCidr(text: string): Cidr | undefined {
  try {
    return parseCidr(text);
  } catch {
    return undefined;
  }
}
