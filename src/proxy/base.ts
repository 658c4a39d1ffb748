import { nftTx, type NftTx } from '../kernel/nft.js';
import { baseChains, baseComments, MAP_TYPES, MAPS, PROXY_FAMILY, PROXY_TABLE } from './rules.js';
import type { TableState } from './netlink.js';

/**
 * The fixed part of the table (hook chains, dispatch chains, maps) as an nft transaction that
 * creates what is missing and rewrites what differs from the wanted state; empty when the table
 * is as wanted. It is small and rarely changes, so it goes through `nft -f`.
 */
export function baseTx(state: TableState | undefined): { tx: NftTx; changes: string[] } {
  const tx = nftTx(PROXY_FAMILY, PROXY_TABLE);
  const changes: string[] = [];
  const chains = baseChains();
  const wrong = chains.filter((c) => state?.chains.get(c.name) !== baseComments(c).join(','));
  const missingMaps = MAPS.filter((m) => !state?.maps.has(m));
  if (wrong.length === 0 && missingMaps.length === 0) return { tx, changes };
  tx.add({ type: 'table', comment: 'Weft service proxy' });
  for (const m of missingMaps) {
    tx.add({ type: 'map', name: m, key: MAP_TYPES[m], value: 'verdict' });
    if (state) changes.push(`add map ${m}`);
  }
  const hookText = (c: (typeof chains)[number]) => (c.hook ? `${c.hook.type} ${c.hook.hook} ${c.hook.priority}` : undefined);
  const how = new Map(wrong.map((c) => [c, !state?.chains.has(c.name) ? 'add' : state.hooks.get(c.name) !== hookText(c) ? 'recreate' : 'rewrite']));
  for (const [c, what] of how) {
    // A base chain's hook cannot be changed in place: a wrong one is deleted and made again.
    if (what === 'recreate') tx.flush({ type: 'chain', name: c.name }).delete({ type: 'chain', name: c.name });
    if (state) changes.push(`${what} chain ${c.name}`);
  }
  for (const c of wrong)
    tx.add({
      type: 'chain',
      name: c.name,
      ...(c.hook ? { chainType: c.hook.type, hook: c.hook.hook, priority: c.hook.priority, policy: 'accept' as const } : {}),
    });
  for (const [c, what] of how) if (what === 'rewrite') tx.flush({ type: 'chain', name: c.name });
  for (const c of wrong) {
    const comments = baseComments(c);
    c.rules.forEach((rule, i) => tx.add({ type: 'rule', chain: c.name, rule, comment: comments[i]! }));
  }
  if (!state) changes.push(`create table ${PROXY_FAMILY} ${PROXY_TABLE}`);
  return { tx, changes };
}
