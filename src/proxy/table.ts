import type { Netns } from '../kernel/exec.js';
import * as op from '../kernel/ops.js';
import { apply, Plan } from '../kernel/plan.js';
import { nftTx } from '../kernel/nft.js';
import { baseTx } from './base.js';
import { clearUdp, matchFlow, type FlowFilter } from '../kernel/conntrack.js';
import { staleFlows, strayFlows } from './conntrack.js';
import { diff, emptyShape, objectId, shapeOf, type ProxyOp, type Shape } from './diff.js';
import { nftGeneration, onlyOwnCommits, ownCommits } from '../kernel/nfnl.js';
import { applyOps, readTables } from './netlink.js';
import { baseTables, PROXY_FAMILY, PROXY_TABLE, type Fragment } from './rules.js';

/** Ops per transaction in a full sync: bounded so one huge initial sync does not hold the kernel's nftables lock for long. */
export const SYNC_CHUNK = 20_000;

export interface SyncResult {
  /** Kernel changes made (nft ops and conntrack flows deleted). */
  ops: number;
  transactions: number;
  /** Human-readable lines for a full sync's repairs (what differed from the wanted table). */
  changes: string[];
  conntrackDeleted: number;
  /** Why stale UDP flows could not be deleted (the rules are applied regardless). */
  conntrackError?: string;
}

const ruleCount = (f: Fragment): number => {
  let n = 0;
  for (const rules of f.chains.values()) n += rules.length;
  return n;
};

/** Conntrack cleanup never fails a sync: the rules are what matters, the flows are retried on the next full sync. */
async function conntrack(fn: () => Promise<number>): Promise<{ deleted: number; error?: string }> {
  try {
    return { deleted: await fn() };
  } catch (e) {
    return { deleted: 0, error: e instanceof Error ? e.message : String(e) };
  }
}

/**
 * The proxy's nftables table in one namespace, and what was last applied to it per Service.
 * `update` diffs a few Services' old and new fragments into one transaction (O(those Services));
 * `sync` reads the whole table from the kernel and repairs it to the wanted state.
 */
export class ProxyTable {
  private readonly applied = new Map<string, Fragment>();
  /**
   * A generation at which `applied` was what the kernel held, while every transaction in the
   * namespace since has been this process's own (ours, or the agent's on its other tables): then
   * `applied` is still what the kernel holds.
   */
  private trusted: number | undefined;

  constructor(readonly ns: Netns) {}

  /** Totals over what is applied, kept as fragments come and go (status is asked often). */
  readonly totals = { services: 0, endpoints: 0, chains: 0, rules: 0 };

  private set(key: string, f: Fragment | undefined): void {
    const old = this.applied.get(key);
    if (old) {
      this.totals.services--;
      this.totals.endpoints -= old.endpoints;
      this.totals.chains -= old.chains.size;
      this.totals.rules -= ruleCount(old);
    }
    if (f) {
      this.applied.set(key, f);
      this.totals.services++;
      this.totals.endpoints += f.endpoints;
      this.totals.chains += f.chains.size;
      this.totals.rules += ruleCount(f);
    } else {
      this.applied.delete(key);
    }
  }

  /** Whether nothing but this process has changed nftables in the namespace since we knew our tables (so nothing drifted). */
  async unchanged(): Promise<boolean> {
    return this.trusted !== undefined && onlyOwnCommits(this.ns, this.trusted, await nftGeneration(this.ns));
  }

  /** One transaction for the changed Services (undefined: the Service is gone), then their stale UDP flows (one conntrack dump, then the deletes). */
  async update(changed: Map<string, Fragment | undefined>): Promise<SyncResult> {
    const old = emptyShape();
    const now: Fragment[] = [];
    const flows: FlowFilter[] = [];
    for (const [key, f] of changed) {
      const before = this.applied.get(key);
      if (before) shapeOf([before], old);
      if (f) now.push(f);
      flows.push(...staleFlows(before, f));
    }
    const ops = diff(old, now);
    const trusted = (await this.unchanged()) ? this.trusted : undefined;
    // Until it is known how a transaction ended, what the kernel holds is known only by reading it.
    this.trusted = undefined;
    const transactions = ops.length ? await ownCommits(this.ns, () => applyOps(this.ns, ops)) : 0;
    this.trusted = trusted;
    for (const [key, f] of changed) {
      this.set(key, f);
    }
    const { deleted, error } = await conntrack(() =>
      flows.length ? clearUdp(this.ns, (all) => all.filter((e) => flows.some((f) => matchFlow(e, f)))) : Promise.resolve(0),
    );
    return { ops: ops.length, transactions, changes: [], conntrackDeleted: deleted, ...(error ? { conntrackError: error } : {}) };
  }

  /**
   * Makes the kernel's table exactly `all`: reads it (chains and their rules' comments, sets, map
   * elements with verdicts), repairs the fixed part with `nft -f`, and sends the rest as a diff
   * against what the kernel holds, never flushing the table. Also deletes UDP flows that lead
   * nowhere the rules lead.
   */
  async sync(all: Map<string, Fragment>): Promise<SyncResult> {
    if (await this.unchanged()) return this.update(changedFrom(this.applied, all));
    const gen = await nftGeneration(this.ns);
    const states = await readTables(this.ns);
    const changes: string[] = [];
    const base = baseTx(states);
    if (!base.tx.empty) await apply(new Plan().add(op.nft({ ns: this.ns, tx: base.tx })));
    changes.push(...base.changes);
    const have: Shape = emptyShape();
    for (const { table, chains } of baseTables()) {
      const state = states.get(table);
      if (!state) continue;
      const fixed = new Set(chains.map((c) => c.name));
      for (const [name, comments] of state.chains)
        if (!fixed.has(name) && !state.hooks.has(name)) have.chains.set(objectId(table, name), { table, name, comments });
      for (const name of state.sets) have.sets.set(objectId(table, name), { table, name });
      for (const [id, e] of state.elements) have.elements.set(objectId(table, id), { table, ...e });
    }
    const ops = diff(have, all.values());
    if (states.size) changes.push(...summarize(ops));
    this.trusted = undefined;
    const transactions = ops.length ? await ownCommits(this.ns, () => applyOps(this.ns, ops, SYNC_CHUNK)) : 0;
    const ours = transactions + (base.tx.empty ? 0 : 1);
    if (onlyOwnCommits(this.ns, gen, await nftGeneration(this.ns))) this.trusted = gen;
    for (const k of [...this.applied.keys()]) if (!all.has(k)) this.set(k, undefined);
    for (const [k, f] of all) this.set(k, f);
    const targets = [...all.values()].flatMap((f) => f.udp);
    const { deleted: conntrackDeleted, error } = await conntrack(() =>
      targets.length ? clearUdp(this.ns, (all) => strayFlows(all, targets)) : Promise.resolve(0),
    );
    if (conntrackDeleted) changes.push(`delete ${conntrackDeleted} stale UDP conntrack entries`);
    return {
      ops: ops.length + (base.tx.empty ? 0 : base.tx.ops.length),
      transactions: ours,
      changes,
      conntrackDeleted,
      ...(error ? { conntrackError: error } : {}),
    };
  }
}

const signatures = new WeakMap<Fragment, string>();

/** A fragment as one string, remembered per fragment object: equal strings, equal rules. */
function signature(f: Fragment): string {
  let sig = signatures.get(f);
  if (sig === undefined) signatures.set(f, (sig = JSON.stringify([[...f.chains], [...f.sets], f.elements])));
  return sig;
}

/** The Services whose fragment differs between what was applied and `all` (undefined: gone). */
function changedFrom(applied: ReadonlyMap<string, Fragment>, all: Map<string, Fragment>): Map<string, Fragment | undefined> {
  const out = new Map<string, Fragment | undefined>();
  for (const [k, f] of all) {
    const a = applied.get(k);
    if (!a || signature(a) !== signature(f)) out.set(k, f);
  }
  for (const k of applied.keys()) if (!all.has(k)) out.set(k, undefined);
  return out;
}
/** A repair as a few lines: counts per kind of op, and the first names. */
function summarize(ops: ProxyOp[]): string[] {
  const by = new Map<string, string[]>();
  for (const o of ops) {
    const what =
      o.op === 'addRule'
        ? undefined
        : o.op === 'addElement' || o.op === 'delElement'
          ? `${o.op === 'addElement' ? 'add' : 'delete'} element in ${o.map}`
          : `${o.op.replace(/[A-Z].*/, '')} ${o.op.endsWith('Set') ? 'set' : 'chain'}`;
    if (!what) continue;
    const name = 'name' in o ? o.name : 'key' in o ? o.key.join(' . ') : '';
    const list = by.get(what) ?? [];
    list.push(name);
    by.set(what, list);
  }
  return [...by].map(([what, names]) => `${what}: ${names.length} (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''})`);
}

/** Removes the proxy's table (`weft agent --cleanup`); a missing table is fine. */
export async function cleanupProxy(ns: Netns): Promise<boolean> {
  const present = [...(await readTables(ns)).keys()];
  if (present.length === 0) return false;
  const tx = nftTx(PROXY_FAMILY, PROXY_TABLE);
  for (const table of present) tx.delete({ table, type: 'table' });
  await apply(new Plan().add(op.nft({ ns, tx, tolerate: 'missing' })));
  return true;
}
