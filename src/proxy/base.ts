import { nftTx, type NftTx } from '../kernel/nft.js';
import { baseComments, baseTables, MAP_TYPES, PROXY_FAMILY, PROXY_TABLE, type BaseChain } from './rules.js';
import type { TableState } from './netlink.js';

const hookText = (c: BaseChain): string | undefined => (c.hook ? `${c.hook.type} ${c.hook.hook} ${c.hook.priority}` : undefined);

/**
 * The fixed part of every table (hook chains, dispatch chains, maps) as one nft transaction that
 * creates what is missing and rewrites what differs from the wanted state; empty when all is as
 * wanted. It is small and rarely changes, so it goes through `nft -f`.
 */
export function baseTx(states: Map<string, TableState>): { tx: NftTx; changes: string[] } {
  const tx = nftTx(PROXY_FAMILY, PROXY_TABLE);
  const changes: string[] = [];
  const work = baseTables().map(({ table, chains, maps }) => {
    const state = states.get(table);
    const wanted = new Set(chains.map((c) => c.name));
    return {
      table,
      state,
      wrong: chains.filter((c) => state?.chains.get(c.name) !== baseComments(c).join(',')),
      missingMaps: maps.filter((m) => !state?.maps.has(m)),
      // Hook chains no longer wanted (an older agent's filter hooks): every packet would still cross them.
      stale: [...(state?.hooks.keys() ?? [])].filter((name) => !wanted.has(name)),
    };
  });
  const todo = work.filter((w) => w.wrong.length > 0 || w.missingMaps.length > 0 || w.stale.length > 0);
  if (todo.length === 0) return { tx, changes };
  const created = todo.filter((w) => !w.state).map((w) => w.table);
  if (created.length) changes.push(`create table${created.length > 1 ? 's' : ''} ${created.join(', ')}`);
  // Everything a rule names (maps, chains) is added before any rule.
  for (const { table, state, wrong, missingMaps, stale } of todo) {
    tx.add({ table, type: 'table', comment: table === PROXY_TABLE ? 'Weft service proxy' : 'Weft service proxy: a shard of the Services' });
    for (const name of stale) {
      tx.flush({ table, type: 'chain', name }).delete({ table, type: 'chain', name });
      changes.push(`delete chain ${name} in ${table}`);
    }
    for (const m of missingMaps) {
      tx.add({ table, type: 'map', name: m, key: MAP_TYPES[m], value: 'verdict' });
      if (state) changes.push(`add map ${m} in ${table}`);
    }
    for (const c of wrong) {
      const what = !state?.chains.has(c.name) ? 'add' : state.hooks.get(c.name) !== hookText(c) ? 'recreate' : 'rewrite';
      // A base chain's hook cannot be changed in place: a wrong one is deleted and made again.
      if (what === 'recreate') tx.flush({ table, type: 'chain', name: c.name }).delete({ table, type: 'chain', name: c.name });
      tx.add({
        table,
        type: 'chain',
        name: c.name,
        ...(c.hook ? { chainType: c.hook.type, hook: c.hook.hook, priority: c.hook.priority, policy: 'accept' as const } : {}),
      });
      if (what === 'rewrite') tx.flush({ table, type: 'chain', name: c.name });
      if (state) changes.push(`${what} chain ${c.name} in ${table}`);
    }
  }
  for (const { table, wrong } of todo)
    for (const c of wrong) {
      const comments = baseComments(c);
      c.rules.forEach((rule, i) => tx.add({ table, type: 'rule', chain: c.name, rule, comment: comments[i]! }));
    }
  return { tx, changes };
}
