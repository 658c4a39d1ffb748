import { isIP } from 'node:net';

/** An IP address as a number plus its family; v4 and v6 share one arithmetic on bigint. */
export interface Addr {
  family: 4 | 6;
  value: bigint;
}

/** A prefix such as 10.244.1.0/24. `ip` may carry host bits (10.244.1.7/24); `base` never does. */
export interface Cidr {
  family: 4 | 6;
  ip: bigint;
  base: bigint;
  prefix: number;
}

const bits = (family: 4 | 6): number => (family === 4 ? 32 : 128);

export class AddressError extends Error {}

export function parseAddr(text: string): Addr {
  const family = isIP(text);
  if (family === 4) {
    // In a Number, then one BigInt: the hot path of every reconcile (bigint shifts cost far more).
    let n = 0;
    for (const part of text.split('.')) n = n * 256 + Number(part);
    return { family, value: BigInt(n) };
  }
  if (family === 6) {
    return { family, value: parseV6(text) };
  }
  throw new AddressError(`"${text}" is not an IP address`);
}

function parseV6(text: string): bigint {
  let body = text;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(body);
  if (dotted) {
    const v4 = parseAddr(dotted[1]!).value;
    body = `${body.slice(0, dotted.index)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const words = (s: string) => (s === '' ? [] : s.split(':').map((w) => BigInt(parseInt(w, 16))));
  const [head, rest] = body.split('::') as [string, string | undefined];
  const left = words(head);
  const right = rest === undefined ? [] : words(rest);
  const all = [...left, ...Array<bigint>(8 - left.length - right.length).fill(0n), ...right];
  return all.reduce((acc, w) => (acc << 16n) | w, 0n);
}

export function formatAddr(a: Addr): string {
  if (a.family === 4) {
    const n = Number(a.value);
    return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
  }
  const words: number[] = [];
  for (let i = 7; i >= 0; i--) words.push(Number((a.value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) throw new AddressError(`"${text}" is not a CIDR (expected ADDRESS/PREFIX, e.g. 10.244.0.0/16)`);
  const addr = parseAddr(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > bits(addr.family)) {
    throw new AddressError(`"${text}" has a bad prefix length (0-${bits(addr.family)} for IPv${addr.family})`);
  }
  return { family: addr.family, ip: addr.value, base: addr.value & mask(addr.family, prefix), prefix };
}

const MASKS = { 4: Array.from({ length: 33 }, (_, p) => maskOf(32, p)), 6: Array.from({ length: 129 }, (_, p) => maskOf(128, p)) };

function maskOf(total: number, prefix: number): bigint {
  return ((1n << BigInt(total)) - 1n) ^ ((1n << BigInt(total - prefix)) - 1n);
}

export function mask(family: 4 | 6, prefix: number): bigint {
  return MASKS[family][prefix] ?? maskOf(bits(family), prefix);
}

/** The last address of the prefix (the broadcast address for IPv4). */
export function lastAddr(c: Cidr): bigint {
  return c.base | ((1n << BigInt(bits(c.family) - c.prefix)) - 1n);
}

export function contains(c: Cidr, a: Addr): boolean {
  return a.family === c.family && (a.value & mask(c.family, c.prefix)) === c.base;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const p = Math.min(a.prefix, b.prefix);
  return (a.base & mask(a.family, p)) === (b.base & mask(b.family, p));
}

/** 10.244.1.0/24 — the network itself, host bits cleared. */
export function formatNetwork(c: Cidr): string {
  return `${formatAddr({ family: c.family, value: c.base })}/${c.prefix}`;
}

/** 10.244.1.7/24 — the address with its prefix, as CNI results carry it. */
export function formatCidr(c: Cidr): string {
  return `${formatAddr({ family: c.family, value: c.ip })}/${c.prefix}`;
}

export function addrOf(c: Cidr): Addr {
  return { family: c.family, value: c.ip };
}

export function withAddr(c: Cidr, value: bigint): Cidr {
  return { ...c, ip: value };
}

/** Every /`len` subnet of `net`, in order; `net` must be no longer than `len`. */
export function subnetCount(net: Cidr, len: number): bigint {
  return 1n << BigInt(len - net.prefix);
}

export function nthSubnet(net: Cidr, len: number, n: bigint): Cidr {
  const base = net.base + (n << BigInt(bits(net.family) - len));
  return { family: net.family, ip: base, base, prefix: len };
}
