import { createHash } from 'node:crypto';
import type { NftObject } from '../kernel/nft.js';
import type { NftTableState } from '../kernel/state.js';
import type { Firewall } from './types.js';

/** The agent's own nftables table (the CNI plugin's is `weft-cni`). */
export const TABLE = 'weft';
export const FAMILY = 'ip';
export const PEER_SET = 'vxlan_peers';
export const FORGED_COUNTER = 'vxlan_forged';
/** Comments of the accept rules the agent adds to other tables' forward chains start with this. */
export const FORWARD_MARK = 'weft forward';

export interface ChainSpec {
  chain: Extract<NftObject, { type: 'chain' }>;
  rules: string[];
  /** Comments the rules carry; a chain whose rules carry other comments is rewritten. */
  comments: string[];
}

const tag = (prefix: string, parts: string[]): string[] => {
  const hash = createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 10);
  return parts.slice(1).map((_, i) => `${prefix}:${hash}:${i}`);
};

/**
 * The chains of the `weft` table for a firewall spec. Each rule is tagged with a hash of its whole
 * chain, so reading the comments back tells whether the chain is exactly as wanted (a rule deleted
 * or edited by hand, or a changed spec, shows as a mismatch) without parsing nft's rule syntax.
 */
export function firewallChains(fw: Firewall): ChainSpec[] {
  const net = fw.network;
  const own = fw.ownSubnet;
  const chains: Omit<ChainSpec, 'comments'>[] = [];
  if (fw.vxlan) {
    // Dropped in the input hook, before the UDP socket hands the packet to the VXLAN driver.
    chains.push({
      chain: { type: 'chain', name: 'input', chainType: 'filter', hook: 'input', priority: 'filter - 10', policy: 'accept' },
      rules: [`udp dport ${fw.vxlan.port} ip saddr @${PEER_SET} accept`, `udp dport ${fw.vxlan.port} counter name ${FORGED_COUNTER} drop`],
    });
    // The encapsulated packets between nodes are never NATed and no rule asks for their state, yet
    // with the tables above conntrack would track them on both nodes: a second lookup per packet
    // besides the inner pod flow's (measured: docs/architecture.md, data path cost). Untracked in
    // the raw hooks, to and from leased peers only; the input chain's check is stateless.
    chains.push(
      {
        chain: { type: 'chain', name: 'raw-prerouting', chainType: 'filter', hook: 'prerouting', priority: 'raw', policy: 'accept' },
        rules: [`udp dport ${fw.vxlan.port} ip saddr @${PEER_SET} notrack`],
      },
      {
        chain: { type: 'chain', name: 'raw-output', chainType: 'filter', hook: 'output', priority: 'raw', policy: 'accept' },
        rules: [`udp dport ${fw.vxlan.port} ip daddr @${PEER_SET} notrack`],
      },
    );
  }
  chains.push({
    chain: { type: 'chain', name: 'forward', chainType: 'filter', hook: 'forward', priority: 'filter', policy: 'accept' },
    rules: [`ip saddr ${net} accept`, `ip daddr ${net} accept`],
  });
  if (fw.ipMasq) {
    // flannel's ip-masq rules: pod↔pod never NATed, pods → outside masqueraded except multicast,
    // and host-network traffic to remote pods gets a source the remote pod can answer.
    chains.push({
      chain: { type: 'chain', name: 'postrouting', chainType: 'nat', hook: 'postrouting', priority: 'srcnat', policy: 'accept' },
      rules: [
        `ip saddr ${net} ip daddr ${net} return`,
        `ip saddr != ${net} ip daddr ${own} return`,
        `ip saddr ${net} ip daddr != 224.0.0.0/4 masquerade fully-random`,
        `ip saddr != ${net} ip daddr ${net} masquerade fully-random`,
      ],
    });
  }
  return chains.map((c) => {
    const decl = `${c.chain.chainType} ${c.chain.hook} ${String(c.chain.priority)} ${c.chain.policy}`;
    return { ...c, comments: tag('weft', [decl, ...c.rules]) };
  });
}

/**
 * flannel's --iptables-forward-rules in nftables terms. An accept ends only its own table, so a
 * forward-hook base chain of another table whose policy is drop (Docker's `ip filter FORWARD`,
 * through iptables-nft) would drop pod traffic between nodes: such a chain gets these rules
 * appended. They are counter + accept on an address prefix, which iptables-nft can list too.
 */
export function forwardRules(network: string): { rules: string[]; comments: string[] } {
  const rules = [`ip saddr ${network} counter accept`, `ip daddr ${network} counter accept`];
  return { rules, comments: tag(FORWARD_MARK, ['forward', ...rules]) };
}

/** A forward-hook base chain in a table that is not the agent's, as the kernel holds it. */
export interface ForeignForward {
  family: string;
  table: string;
  chain: string;
  policy?: string;
  /** Handles and comments of the agent's rules in it. */
  ours: { handle: number; comment: string }[];
}

/** Forward-hook base chains of IPv4-capable tables other than the agent's. */
export function foreignForwardChains(ruleset: NftTableState[]): ForeignForward[] {
  const out: ForeignForward[] = [];
  for (const t of ruleset) {
    if ((t.family !== 'ip' && t.family !== 'inet') || (t.family === FAMILY && t.name === TABLE)) continue;
    for (const c of t.chains.values()) {
      if (c.hook !== 'forward') continue;
      out.push({
        family: t.family,
        table: t.name,
        chain: c.name,
        ...(c.policy ? { policy: c.policy } : {}),
        ours: c.rules.filter((r) => r.comment?.startsWith(FORWARD_MARK)).map((r) => ({ handle: r.handle, comment: r.comment! })),
      });
    }
  }
  return out;
}
