import type { Netns } from '../kernel/exec.js';
import { nftTx, type NftTx } from '../kernel/nft.js';
import { nft } from '../kernel/ops.js';
import type { Plan } from '../kernel/plan.js';
import { nftTable } from '../kernel/state.js';
import { contains, formatNetwork, parseAddr, parseCidr, type Cidr } from '../ip/cidr.js';
import type { IPConfig } from './spec.js';

/**
 * The bridge plugin's ipMasq in nftables: traffic from a pod to its own subnet and to multicast is
 * left alone, everything else is masqueraded. Pods are set elements (address . own subnet), so ADD
 * and DEL change elements only; the table, sets and chain are written when they are not all there.
 */
const TABLE = 'weft-cni';
const CHAIN = 'postrouting';
const RULES = ['ip saddr . ip daddr @own_subnet return', 'ip saddr @masq_src ip daddr != 224.0.0.0/4 masquerade'];

// "add" creates only what is missing, and the chain is flushed and written again in the same
// transaction, so two first ADDs at once still leave each rule once.
function base(): NftTx {
  return nftTx('ip', TABLE)
    .add(
      { type: 'table' },
      { type: 'set', name: 'masq_src', key: 'ipv4_addr' },
      { type: 'set', name: 'own_subnet', key: ['ipv4_addr', 'ipv4_addr'], flags: ['interval'] },
      { type: 'chain', name: CHAIN, chainType: 'nat', hook: 'postrouting', priority: 'srcnat', policy: 'accept' },
    )
    .flush({ type: 'chain', name: CHAIN })
    .add(...RULES.map((rule) => ({ type: 'rule' as const, chain: CHAIN, rule })));
}

/** Whether the table, both sets and the chain with its rules are all there. */
async function inPlace(ns: Netns): Promise<boolean> {
  const t = await nftTable(ns, 'ip', TABLE);
  return !!t && t.sets.has('masq_src') && t.sets.has('own_subnet') && t.chains.get(CHAIN)?.rules.length === RULES.length;
}

/** A pod address and its own subnet; a DEL that no longer knows the subnet leaves that harmless element. */
export interface MasqEntry {
  ip: string;
  subnet?: string;
}

/** The masquerade elements of `ips`; the subnet comes from the address's prefix or the range holding it. */
export function masqEntries(ips: IPConfig[], ranges: Cidr[] = []): MasqEntry[] {
  return ips
    .filter((ip) => !ip.address.includes(':'))
    .map((ip) => {
      const [addr, prefix] = ip.address.split('/') as [string, string | undefined];
      if (prefix !== undefined) return { ip: addr, subnet: formatNetwork(parseCidr(ip.address)) };
      const range = ranges.find((r) => contains(r, parseAddr(addr)));
      return range ? { ip: addr, subnet: formatNetwork(range) } : { ip: addr };
    });
}

const src = (entries: MasqEntry[]) => entries.map((e) => ({ type: 'element' as const, set: 'masq_src', key: e.ip }));
const own = (entries: MasqEntry[]) => entries.filter((e) => e.subnet).map((e) => ({ type: 'element' as const, set: 'own_subnet', key: [e.ip, e.subnet!] }));

export async function addMasq(plan: Plan, ns: Netns, entries: MasqEntry[]): Promise<Plan> {
  if (entries.length === 0) return plan;
  const tx = (await inPlace(ns)) ? nftTx('ip', TABLE) : base();
  return plan.add(nft({ ns, tx: tx.add(...src(entries), ...own(entries)) }));
}

/** Adding before deleting makes the delete succeed whether or not the element was there (one transaction). */
export function deleteMasq(plan: Plan, ns: Netns, entries: MasqEntry[]): Plan {
  if (entries.length === 0) return plan;
  const tx = nftTx('ip', TABLE)
    .add(...src(entries))
    .delete(...src(entries));
  if (own(entries).length) tx.add(...own(entries)).delete(...own(entries));
  return plan.add(nft({ ns, tx, tolerate: 'missing' }));
}
