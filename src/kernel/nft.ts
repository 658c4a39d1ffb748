import { inNetns, KernelError, run, type Netns } from './exec.js';

export interface NftRule {
  handle: number;
  comment?: string;
}

export interface NftChain {
  name: string;
  hook?: string;
  rules: NftRule[];
}

/** One nftables table as the kernel holds it: chains with their rules, set elements, named counters. */
export interface NftTable {
  family: string;
  name: string;
  chains: Map<string, NftChain>;
  sets: Map<string, string[]>;
  counters: Map<string, { packets: number; bytes: number }>;
}

type Obj = Record<string, Record<string, unknown>>;

/** Reads a table; undefined when it does not exist. */
export async function nftTable(ns: Netns, family: string, name: string): Promise<NftTable | undefined> {
  let stdout: string;
  try {
    ({ stdout } = await run(inNetns(ns, 'nft', ['-j', 'list', 'table', family, name])));
  } catch (e) {
    if (e instanceof KernelError && e.notFound) return undefined;
    throw e;
  }
  const items = (JSON.parse(stdout) as { nftables: Obj[] }).nftables;
  const table: NftTable = { family, name, chains: new Map(), sets: new Map(), counters: new Map() };
  for (const item of items) {
    if (item.chain) {
      const c = item.chain;
      table.chains.set(String(c.name), { name: String(c.name), ...(typeof c.hook === 'string' ? { hook: c.hook } : {}), rules: [] });
    } else if (item.set) {
      const elem = (item.set.elem ?? []) as unknown[];
      table.sets.set(String(item.set.name), elem.map((e) => (typeof e === 'string' ? e : JSON.stringify(e))));
    } else if (item.counter) {
      table.counters.set(String(item.counter.name), { packets: Number(item.counter.packets), bytes: Number(item.counter.bytes) });
    }
  }
  for (const item of items) {
    if (!item.rule) continue;
    const r = item.rule;
    table.chains.get(String(r.chain))?.rules.push({ handle: Number(r.handle), ...(typeof r.comment === 'string' ? { comment: r.comment } : {}) });
  }
  return table;
}
