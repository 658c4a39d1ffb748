import { Plan } from '../kernel/plan.js';
import type { Netns } from '../kernel/exec.js';

/**
 * The bridge plugin's ipMasq in nftables: traffic from a pod to its own subnet and to multicast is
 * left alone, everything else is masqueraded. Pods are set elements (address . own subnet), so ADD
 * and DEL change one element and never rewrite the chain.
 */
const TABLE = 'weft-cni';

// One nft transaction: "add" creates only what is missing, and the chain's two rules are flushed and
// written again, so sending this with every ADD never duplicates a rule.
const BASE = `table ip ${TABLE} {
  set masq_src { type ipv4_addr; }
  set own_subnet { type ipv4_addr . ipv4_addr; flags interval; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
}
flush chain ip ${TABLE} postrouting
add rule ip ${TABLE} postrouting ip saddr . ip daddr @own_subnet return
add rule ip ${TABLE} postrouting ip saddr @masq_src ip daddr != 224.0.0.0/4 masquerade
`;

/** A pod address and its own subnet; a DEL that no longer knows the subnet leaves that harmless element. */
export interface MasqEntry {
  ip: string;
  subnet?: string;
}

const elements = (entries: MasqEntry[]) => ({
  src: entries.map((e) => e.ip).join(', '),
  own: entries
    .filter((e) => e.subnet)
    .map((e) => `${e.ip} . ${e.subnet}`)
    .join(', '),
});

export function addMasq(plan: Plan, ns: Netns, entries: MasqEntry[]): Plan {
  if (entries.length === 0) return plan;
  const el = elements(entries);
  return plan.nft(ns, `${BASE}add element ip ${TABLE} masq_src { ${el.src} }\nadd element ip ${TABLE} own_subnet { ${el.own} }\n`);
}

/** Adding before deleting makes the delete succeed whether or not the element was there (one transaction). */
export function deleteMasq(plan: Plan, ns: Netns, entries: MasqEntry[]): Plan {
  if (entries.length === 0) return plan;
  const el = elements(entries);
  const lines = [`add element ip ${TABLE} masq_src { ${el.src} }`, `delete element ip ${TABLE} masq_src { ${el.src} }`];
  if (el.own) lines.push(`add element ip ${TABLE} own_subnet { ${el.own} }`, `delete element ip ${TABLE} own_subnet { ${el.own} }`);
  return plan.nft(ns, `${lines.join('\n')}\n`, 'missing');
}
