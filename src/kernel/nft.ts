/**
 * nftables as objects, in the way knftables types them: a transaction (one `nft -f` run, all or
 * nothing) of verbs on tables, chains, rules, sets, maps, elements and named counters. Rule bodies
 * stay nft's own expression text. Maps take any value type, `verdict` included, and keys of sets
 * and maps may be concatenations (`['ipv4_addr', 'inet_proto', 'inet_service']`).
 */
export type NftFamily = 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev';

interface In {
  /** Another table than the transaction's (e.g. iptables-nft's `ip filter`). */
  family?: NftFamily;
  table?: string;
}

export type NftObject =
  | (In & { type: 'table'; comment?: string })
  | (In & {
      type: 'chain';
      name: string;
      /** Base chains only: type, hook, priority (a number or a name such as `filter - 10`), policy. */
      chainType?: 'filter' | 'nat' | 'route';
      hook?: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting' | 'ingress';
      priority?: number | string;
      policy?: 'accept' | 'drop';
      comment?: string;
    })
  | (In & { type: 'rule'; chain: string; rule?: string; comment?: string; handle?: number })
  | (In & {
      type: 'set';
      name: string;
      key: string | string[];
      flags?: ('interval' | 'timeout' | 'constant' | 'dynamic')[];
      timeout?: string;
      comment?: string;
    })
  | (In & { type: 'map'; name: string; key: string | string[]; value: string; flags?: ('interval' | 'timeout' | 'constant')[]; comment?: string })
  | (In & { type: 'element'; set: string; key: string | string[]; value?: string; comment?: string })
  | (In & { type: 'counter'; name: string });

export type NftVerb = 'add' | 'create' | 'insert' | 'replace' | 'delete' | 'flush';

export class NftTx {
  readonly ops: { verb: NftVerb; obj: NftObject }[] = [];

  constructor(
    readonly family: NftFamily,
    readonly table: string,
  ) {}

  /** Creates what is missing; an existing table, chain, set or element is left as it is. */
  add(...objs: NftObject[]): this {
    return this.push('add', objs);
  }
  /** Like add, but fails (exists) when the object is there. */
  create(...objs: NftObject[]): this {
    return this.push('create', objs);
  }
  /** A rule at the top of its chain (or before `handle`). */
  insert(...objs: NftObject[]): this {
    return this.push('insert', objs);
  }
  /** A rule in place of the one with `handle`. */
  replace(...objs: NftObject[]): this {
    return this.push('replace', objs);
  }
  delete(...objs: NftObject[]): this {
    return this.push('delete', objs);
  }
  /** Empties a chain, set or map (or a whole table) and keeps it. */
  flush(...objs: NftObject[]): this {
    return this.push('flush', objs);
  }

  get empty(): boolean {
    return this.ops.length === 0;
  }

  private push(verb: NftVerb, objs: NftObject[]): this {
    for (const obj of objs) this.ops.push({ verb, obj });
    return this;
  }
}

export const nftTx = (family: NftFamily, table: string): NftTx => new NftTx(family, table);

function word(s: string, what: string): string {
  if (!/^[A-Za-z0-9_.\-/:]+$/.test(s)) throw new Error(`nft ${what} "${s}" must be letters, digits and _ . - / :`);
  return s;
}

function comment(c: string | undefined): string {
  if (c === undefined) return '';
  if (/["\n\\]/.test(c) || Buffer.byteLength(c) > 128)
    throw new Error(`nft comment ${JSON.stringify(c)} must be one line of at most 128 bytes without " or \\`);
  return ` comment "${c}"`;
}

const keyText = (k: string | string[]): string => (Array.isArray(k) ? k.join(' . ') : k);

function objText(tx: NftTx, verb: NftVerb, o: NftObject): string {
  const where = `${o.family ?? tx.family} ${word(o.table ?? tx.table, 'table name')}`;
  switch (o.type) {
    case 'table':
      return `${verb} table ${where}${o.comment !== undefined && verb !== 'delete' && verb !== 'flush' ? ` {${comment(o.comment)}; }` : ''}`;
    case 'chain': {
      const head = `${verb} chain ${where} ${word(o.name, 'chain name')}`;
      if (verb !== 'add' && verb !== 'create') return head;
      const parts: string[] = [];
      if (o.hook) parts.push(`type ${o.chainType ?? 'filter'} hook ${o.hook} priority ${o.priority ?? 0};`);
      if (o.policy) parts.push(`policy ${o.policy};`);
      if (o.comment !== undefined) parts.push(`${comment(o.comment).trim()};`);
      return parts.length ? `${head} { ${parts.join(' ')} }` : head;
    }
    case 'rule': {
      const head = `${verb} rule ${where} ${word(o.chain, 'chain name')}`;
      if (verb === 'delete') {
        if (o.handle === undefined) throw new Error('nft: deleting a rule needs its handle');
        return `${head} handle ${o.handle}`;
      }
      if (o.rule === undefined) throw new Error(`nft: ${verb} rule needs the rule`);
      const at = o.handle !== undefined ? ` handle ${o.handle}` : '';
      return `${head}${at} ${o.rule}${comment(o.comment)}`;
    }
    case 'set':
    case 'map': {
      const head = `${verb} ${o.type} ${where} ${word(o.name, `${o.type} name`)}`;
      if (verb !== 'add' && verb !== 'create') return head;
      const type = o.type === 'map' ? `${keyText(o.key)} : ${o.value}` : keyText(o.key);
      const flags = o.flags?.length ? ` flags ${o.flags.join(', ')};` : '';
      const timeout = o.type === 'set' && o.timeout ? ` timeout ${o.timeout};` : '';
      const c = o.comment !== undefined ? `${comment(o.comment)};` : '';
      return `${head} { type ${type};${flags}${timeout}${c} }`;
    }
    case 'element':
      return `${verb} element ${where} ${word(o.set, 'set name')} { ${elementText(o)} }`;
    case 'counter':
      return `${verb} counter ${where} ${word(o.name, 'counter name')}`;
  }
}

const elementText = (o: Extract<NftObject, { type: 'element' }>): string =>
  `${keyText(o.key)}${o.comment !== undefined ? comment(o.comment) : ''}${o.value !== undefined ? ` : ${o.value}` : ''}`;

/** The transaction as an `nft -f` script. Consecutive elements of one set and verb share a line. */
export function renderTx(tx: NftTx): string {
  const lines: string[] = [];
  let last: { verb: NftVerb; key: string } | undefined;
  for (const { verb, obj } of tx.ops) {
    if (obj.type === 'element') {
      const key = `${obj.family ?? tx.family} ${obj.table ?? tx.table} ${obj.set}`;
      if (last && last.verb === verb && last.key === key) {
        lines[lines.length - 1] = lines[lines.length - 1]!.replace(/ }$/, `, ${elementText(obj)} }`);
        continue;
      }
      last = { verb, key };
    } else {
      last = undefined;
    }
    lines.push(objText(tx, verb, obj));
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

// ---- reading ----------------------------------------------------------------------------------

export interface NftRuleState {
  handle: number;
  comment?: string;
}

export interface NftChainState {
  name: string;
  /** Base chains: their hook, type, priority and policy. */
  hook?: string;
  type?: string;
  prio?: number;
  policy?: string;
  rules: NftRuleState[];
}

/** One nftables table as the kernel holds it: chains with their rules, set and map elements, named counters. */
export interface NftTableState {
  family: string;
  name: string;
  chains: Map<string, NftChainState>;
  sets: Map<string, string[]>;
  counters: Map<string, { packets: number; bytes: number }>;
}
