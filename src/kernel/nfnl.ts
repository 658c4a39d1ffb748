import { isIPv4 } from 'node:net';
import { bytesIp, cstr, ipBytes, NLM_F_CREATE, nested, parseAttrs, Writer, type Attrs } from './codec.js';
import { errnoKind, KernelError } from './errors.js';
import { strerror } from './libc.js';
import type { NftTx } from './nft.js';
import type { Netns } from './exec.js';
import type { NftChainState, NftTableState } from './nft.js';
import { Sock } from './socket.js';

/**
 * nftables state read over nfnetlink (NETLINK_NETFILTER dumps), without starting `nft`: tables,
 * chains (hook, type, priority, policy), rules (handle and comment), set and map elements, and
 * named counters. Element keys of 4 bytes read as IPv4 addresses (the sets Weft reads), others as hex.
 */
const NFNL_SUBSYS_NFTABLES = 10;
const NLA_F_NESTED = 0x8000;
const NFT_MSG_GETTABLE = 1;
const NFT_MSG_GETCHAIN = 4;
const NFT_MSG_GETRULE = 7;
const NFT_MSG_GETSET = 10;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_GETSETELEM = 13;
const NFT_MSG_DELSETELEM = 14;
const NFT_MSG_GETGEN = 16;
const NFT_MSG_GETOBJ = 19;
const NFTA_GEN_ID = 1;

const NFTA_TABLE_NAME = 1;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_CHAIN_HOOK = 4;
const NFTA_HOOK_HOOKNUM = 1;
const NFTA_HOOK_PRIORITY = 2;
const NFTA_CHAIN_POLICY = 5;
const NFTA_CHAIN_TYPE = 7;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_HANDLE = 3;
const NFTA_RULE_USERDATA = 7;
const NFTNL_UDATA_RULE_COMMENT = 0;
const NFTA_SET_TABLE = 1;
const NFTA_SET_NAME = 2;
const NFTA_SET_FLAGS = 3;
const NFT_SET_ANONYMOUS = 0x1;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_FLAGS = 3;
const NFT_SET_ELEM_INTERVAL_END = 0x1;
const NFTA_DATA_VALUE = 1;
const NFTA_OBJ_TABLE = 1;
const NFTA_OBJ_NAME = 2;
const NFTA_OBJ_TYPE = 3;
const NFTA_OBJ_DATA = 4;
const NFT_OBJECT_COUNTER = 1;
const NFTA_COUNTER_BYTES = 1;
const NFTA_COUNTER_PACKETS = 2;

const FAMILIES: Record<number, string> = { 1: 'inet', 2: 'ip', 3: 'arp', 5: 'netdev', 7: 'bridge', 10: 'ip6' };
const FAMILY_NUM = Object.fromEntries(Object.entries(FAMILIES).map(([k, v]) => [v, Number(k)])) as Record<string, number>;
const HOOKS = ['prerouting', 'input', 'forward', 'output', 'postrouting'];
const NETDEV_HOOKS = ['ingress', 'egress'];

interface Msg {
  family: string;
  familyNum: number;
  tb: Attrs;
}

function request(type: number, family = 0, flags = 0): Writer {
  const w = new Writer((NFNL_SUBSYS_NFTABLES << 8) | type, flags);
  return w.raw(Buffer.from([family, 0, 0, 0]));
}

function dump(sock: Sock, w: Writer): Msg[] {
  return sock.dump(w).flatMap((m) => {
    if (m.readUInt16LE(4) >> 8 !== NFNL_SUBSYS_NFTABLES) return [];
    const familyNum = m.readUInt8(16);
    return [{ family: FAMILIES[familyNum] ?? String(familyNum), familyNum, tb: parseAttrs(m, 20, m.readUInt32LE(0)) }];
  });
}

const str = (tb: Attrs, t: number): string => cstr(tb.get(t) ?? Buffer.alloc(0));

/** The rule comment nft stores in the rule's user data (TLVs of type, length, value). */
function comment(udata: Buffer | undefined): string | undefined {
  for (let off = 0; udata && off + 2 <= udata.length;) {
    const type = udata[off]!;
    const len = udata[off + 1]!;
    if (type === NFTNL_UDATA_RULE_COMMENT) return cstr(udata.subarray(off + 2, off + 2 + len));
    off += 2 + len;
  }
  return undefined;
}

const keyText = (b: Buffer): string => (b.length === 4 ? bytesIp(b) : b.toString('hex'));

/** The keys of one set or map's elements, as the kernel holds them (interval ends left out). */
function setKeys(sock: Sock, familyNum: number, table: string, set: string): Buffer[] {
  const keys: Buffer[] = [];
  for (const e of dump(sock, request(NFT_MSG_GETSETELEM, familyNum).str(NFTA_SET_ELEM_LIST_TABLE, table).str(NFTA_SET_ELEM_LIST_SET, set))) {
    const list = e.tb.get(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (let off = 0; list && off + 4 <= list.length;) {
      const len = list.readUInt16LE(off);
      if (len < 4) break;
      const el = parseAttrs(list, off + 4, off + len);
      const value = nested(el.get(NFTA_SET_ELEM_KEY)).get(NFTA_DATA_VALUE);
      const endOfInterval = ((el.get(NFTA_SET_ELEM_FLAGS)?.readUInt32BE(0) ?? 0) & NFT_SET_ELEM_INTERVAL_END) !== 0;
      if (value && !endOfInterval) keys.push(value);
      off += (len + 3) & ~3;
    }
  }
  return keys;
}

function read(sock: Sock, only?: { family: string; name: string }, skip?: (table: string) => boolean): NftTableState[] {
  const fam = only ? (FAMILY_NUM[only.family] ?? 0) : 0;
  const tables = new Map<string, NftTableState>();
  const key = (family: string, name: string) => `${family} ${name}`;
  for (const m of dump(sock, request(NFT_MSG_GETTABLE, fam))) {
    const name = str(m.tb, NFTA_TABLE_NAME);
    if ((only && name !== only.name) || skip?.(name)) continue;
    tables.set(key(m.family, name), { family: m.family, name, chains: new Map(), sets: new Map(), counters: new Map() });
  }
  // With tables skipped, chains and rules are dumped per kept table: the kernel filters by table, so a huge skipped one costs nothing.
  const perTable = (type: number, attr: number) =>
    skip ? [...tables.values()].map((t) => request(type, FAMILY_NUM[t.family] ?? 0).str(attr, t.name)) : [request(type, fam)];
  for (const m of perTable(NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE).flatMap((r) => dump(sock, r))) {
    const t = tables.get(key(m.family, str(m.tb, NFTA_CHAIN_TABLE)));
    if (!t) continue;
    const chain: NftChainState = { name: str(m.tb, NFTA_CHAIN_NAME), rules: [] };
    const hook = nested(m.tb.get(NFTA_CHAIN_HOOK));
    if (hook.has(NFTA_HOOK_HOOKNUM)) {
      const n = hook.get(NFTA_HOOK_HOOKNUM)!.readUInt32BE(0);
      chain.hook = (m.family === 'netdev' ? NETDEV_HOOKS : HOOKS)[n] ?? String(n);
      chain.prio = hook.get(NFTA_HOOK_PRIORITY)?.readInt32BE(0) ?? 0;
      if (m.tb.has(NFTA_CHAIN_TYPE)) chain.type = str(m.tb, NFTA_CHAIN_TYPE);
      if (m.tb.has(NFTA_CHAIN_POLICY)) chain.policy = m.tb.get(NFTA_CHAIN_POLICY)!.readUInt32BE(0) === 0 ? 'drop' : 'accept';
    }
    t.chains.set(chain.name, chain);
  }
  for (const m of perTable(NFT_MSG_GETRULE, NFTA_RULE_TABLE).flatMap((r) => dump(sock, r))) {
    const chain = tables.get(key(m.family, str(m.tb, NFTA_RULE_TABLE)))?.chains.get(str(m.tb, NFTA_RULE_CHAIN));
    if (!chain) continue;
    const c = comment(m.tb.get(NFTA_RULE_USERDATA));
    chain.rules.push({ handle: Number(m.tb.get(NFTA_RULE_HANDLE)!.readBigUInt64BE(0)), ...(c !== undefined ? { comment: c } : {}) });
  }
  for (const m of dump(sock, request(NFT_MSG_GETSET, fam))) {
    const t = tables.get(key(m.family, str(m.tb, NFTA_SET_TABLE)));
    const flags = m.tb.get(NFTA_SET_FLAGS)?.readUInt32BE(0) ?? 0;
    if (!t || flags & NFT_SET_ANONYMOUS) continue;
    const name = str(m.tb, NFTA_SET_NAME);
    t.sets.set(name, setKeys(sock, m.familyNum, t.name, name).map(keyText));
  }
  for (const m of dump(sock, request(NFT_MSG_GETOBJ, fam))) {
    const t = tables.get(key(m.family, str(m.tb, NFTA_OBJ_TABLE)));
    if (!t || m.tb.get(NFTA_OBJ_TYPE)?.readUInt32BE(0) !== NFT_OBJECT_COUNTER) continue;
    const data = nested(m.tb.get(NFTA_OBJ_DATA));
    t.counters.set(str(m.tb, NFTA_OBJ_NAME), {
      packets: Number(data.get(NFTA_COUNTER_PACKETS)?.readBigUInt64BE(0) ?? 0n),
      bytes: Number(data.get(NFTA_COUNTER_BYTES)?.readBigUInt64BE(0) ?? 0n),
    });
  }
  return [...tables.values()];
}

/** As state.ts: the socket for this process's own namespace stays open; every use is synchronous. */
let own: Sock | undefined;

function withNfnl<T>(ns: Netns, fn: (s: Sock) => T): T {
  const sock = ns === undefined ? (own ??= Sock.open(undefined, 'netfilter')) : Sock.open(ns, 'netfilter');
  try {
    return fn(sock);
  } catch (e) {
    if (e instanceof KernelError) throw new KernelError(`nftables over netlink: ${e.message}`, e.kind, e.op, e.errno);
    throw e;
  } finally {
    if (sock !== own) sock.close();
  }
}

/**
 * The ruleset's generation: every committed nftables transaction in the namespace (anyone's)
 * increments it, so an unchanged generation proves that nothing changed the ruleset.
 */
export function nftGeneration(ns: Netns): Promise<number> {
  return new Promise((resolve) =>
    resolve(
      withNfnl(ns, (sock) => {
        const a = sock.askNow(request(NFT_MSG_GETGEN));
        const m = a.replies[0];
        const id = m && parseAttrs(m, 20, m.readUInt32LE(0)).get(NFTA_GEN_ID);
        if (a.errno !== 0 || !id) throw new KernelError(`generation: ${a.errno ? strerror(a.errno) : 'no answer'}`, 'other');
        return id.readUInt32BE(0);
      }),
    ),
  );
}

/**
 * Per namespace, the latest run of generations that only this process's transactions made: every
 * commit in it went through `ownCommits`, and nothing else committed in between.
 */
const ownRuns = new Map<string, { from: number; to: number }>();

/**
 * Runs `commit`, which returns how many nftables transactions it made in `ns`, and notes them as this
 * process's own when the generation moved by exactly that much: then no one else committed meanwhile.
 */
export async function ownCommits(ns: Netns, commit: () => number | Promise<number>): Promise<number> {
  const before = await nftGeneration(ns);
  const made = await commit();
  const after = await nftGeneration(ns);
  const key = ns ?? '';
  const run = ownRuns.get(key);
  if (after !== before + made) ownRuns.set(key, { from: after, to: after });
  else if (run?.to === before) run.to = after;
  else ownRuns.set(key, { from: before, to: after });
  return made;
}

/**
 * Whether every nftables transaction in `ns` after generation `since`, up to `now`, was this
 * process's own. A component that keeps its own tables (the Service proxy) then knows they are as
 * it left them, although the generation moved (the agent's VXLAN peer set changes with every lease).
 */
export function onlyOwnCommits(ns: Netns, since: number, now: number): boolean {
  if (since === now) return true;
  const run = ownRuns.get(ns ?? '');
  return run !== undefined && run.from <= since && run.to === now;
}

/** One table; undefined when it does not exist. */
export function nftTable(ns: Netns, family: string, name: string): Promise<NftTableState | undefined> {
  return new Promise((resolve) => resolve(withNfnl(ns, (s) => read(s, { family, name }))[0]));
}

/**
 * The raw keys of one set or map (a concatenation's fields each padded to 4 bytes), without reading
 * the rest of the table: one dump, however many chains the table has. Rejects when the set is not there.
 */
export function nftSetKeys(ns: Netns, family: string, table: string, set: string): Promise<Buffer[]> {
  return new Promise((resolve) => resolve(withNfnl(ns, (s) => setKeys(s, FAMILY_NUM[family] ?? 0, table, set))));
}

/** Every table of the namespace, but those `skip` names (not even listed). */
export function nftRuleset(ns: Netns, skip?: (table: string) => boolean): Promise<NftTableState[]> {
  return new Promise((resolve) => resolve(withNfnl(ns, (s) => read(s, undefined, skip))));
}

/**
 * `nftRuleset(ns, skip)` that dumps the tables again only when the namespace's generation moved since
 * its last dump there: a periodic check of a ruleset that nothing changed costs one request instead
 * of a dump of every chain and rule. The tables it returns are shared between calls: read them only.
 */
export function cachedRuleset(skip?: (table: string) => boolean): (ns: Netns) => Promise<NftTableState[]> {
  const last = new Map<string, { gen: number; tables: NftTableState[] }>();
  return async (ns) => {
    // The generation before the dump: a commit during the dump leaves the pair outdated, so the next call dumps again.
    const gen = await nftGeneration(ns);
    const hit = last.get(ns ?? '');
    if (hit?.gen === gen) return hit.tables;
    const tables = await nftRuleset(ns, skip);
    last.set(ns ?? '', { gen, tables });
    return tables;
  };
}

/**
 * Whether nfnetlink carries `tx` here: only element additions and deletions of single IPv4 keys
 * without values (the peer set changes on every lease event). Everything else goes to `nft -f`.
 */
export function elementsOnly(tx: NftTx): boolean {
  return (
    tx.ops.length > 0 &&
    tx.ops.every(
      ({ verb, obj }) =>
        (verb === 'add' || verb === 'delete') &&
        obj.type === 'element' &&
        typeof obj.key === 'string' &&
        isIPv4(obj.key) &&
        obj.value === undefined &&
        obj.comment === undefined,
    )
  );
}

/** Applies an elementsOnly() transaction: one nfnetlink batch per set and verb; returns how many batches. */
export function applyElements(ns: Netns, tx: NftTx, what: string): number {
  const groups = new Map<string, { verb: 'add' | 'delete'; family: string; table: string; set: string; keys: string[] }>();
  for (const { verb, obj } of tx.ops) {
    if (obj.type !== 'element') continue;
    const family = obj.family ?? tx.family;
    const table = obj.table ?? tx.table;
    const id = `${verb} ${family} ${table} ${obj.set}`;
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { verb: verb as 'add' | 'delete', family, table, set: obj.set, keys: [] }));
    g.keys.push(obj.key as string);
  }
  withNfnl(ns, (sock) => {
    for (const g of groups.values()) {
      // NLM_F_CREATE without NLM_F_EXCL: adding an element that is there is a no-op, as `nft add element`.
      const w = request(g.verb === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM, FAMILY_NUM[g.family] ?? 0, g.verb === 'add' ? NLM_F_CREATE : 0);
      w.str(NFTA_SET_ELEM_LIST_TABLE, g.table).str(NFTA_SET_ELEM_LIST_SET, g.set);
      const list = w.begin(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
      for (const k of g.keys) {
        const el = w.begin(NFTA_LIST_ELEM | NLA_F_NESTED);
        const key = w.begin(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        w.attr(NFTA_DATA_VALUE, ipBytes(k).bytes);
        w.end(key).end(el);
      }
      w.end(list);
      const a = sock.batch(w, NFNL_SUBSYS_NFTABLES);
      if (a.errno !== 0) throw new KernelError(`${what}: ${a.ext ?? strerror(a.errno)}`, errnoKind(a.errno), what, a.errno);
    }
  });
  return groups.size;
}
