import { createHash } from 'node:crypto';
import type { NftObject } from '../kernel/nft.js';
import type { NftTableState } from '../kernel/state.js';
import type { Firewall } from './types.js';

/** The agent's own nftables table (the CNI plugin's is `weft-cni`). */
export const TABLE = 'weft';
export const FAMILY = 'ip';
export const PEER_SET = 'vxlan_peers';
export const FORGED_COUNTER = 'vxlan_forged';
/** The node-local DNS's port: the agent serves it there, and its notrack rules match it. */
export const DNS_PORT = 53;
/** Comments of the accept rules the agent adds to other tables' forward chains start with this. */
export const FORWARD_MARK = 'weft forward';

export interface ChainSpec {
  chain: Extract<NftObject, { type: 'chain' }>;
  rules: string[];
  /** Comments the rules carry; a chain whose rules carry other comments is rewritten. */
  comments: string[];
}

/** The notrack rules for DNS to and from the node-local DNS at `ip` (agent/dns.ts says why), per hook, as `nft list` prints them. */
export function notrackRules(ip: string): { prerouting: string[]; output: string[] } {
  const to = `ip daddr ${ip} meta l4proto { tcp, udp } th dport ${DNS_PORT} notrack`;
  const from = `ip saddr ${ip} meta l4proto { tcp, udp } th sport ${DNS_PORT} notrack`;
  return { prerouting: [to], output: [to, from] };
}

/** Hashes by chain text: every reconcile asks again for the same few chains. */
const hashes = new Map<string, string>();

const tag = (prefix: string, parts: string[]): string[] => {
  const text = parts.join('\n');
  let hash = hashes.get(text);
  if (hash === undefined) {
    if (hashes.size > 64) hashes.clear();
    hash = createHash('sha256').update(text).digest('hex').slice(0, 10);
    hashes.set(text, hash);
  }
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
  if (fw.vxlan || fw.dns) {
    // One raw chain per hook, before conntrack, for both uses: each base chain costs every packet
    // that crosses its hook (docs/architecture.md, data path cost). DNS to and from the node-local
    // DNS is untracked (agent/dns.ts). From and to leased peers the encapsulated packets are
    // untracked (nothing NATs them or reads their state, and tracking them cost a conntrack lookup
    // per packet on both nodes besides the inner flow's); from anyone else to this node they are
    // dropped before the UDP socket hands them to the VXLAN driver.
    const dns = fw.dns ? notrackRules(fw.dns) : { prerouting: [], output: [] };
    const vx = fw.vxlan;
    chains.push(
      {
        chain: { type: 'chain', name: 'raw-prerouting', chainType: 'filter', hook: 'prerouting', priority: 'raw', policy: 'accept' },
        rules: [
          ...dns.prerouting,
          ...(vx
            ? [
                `udp dport ${vx.port} ip saddr @${PEER_SET} notrack accept`,
                `udp dport ${vx.port} fib daddr type { local, broadcast, multicast } counter name ${FORGED_COUNTER} drop`,
              ]
            : []),
        ],
      },
      {
        chain: { type: 'chain', name: 'raw-output', chainType: 'filter', hook: 'output', priority: 'raw', policy: 'accept' },
        rules: [...dns.output, ...(vx ? [`udp dport ${vx.port} ip daddr @${PEER_SET} notrack`] : [])],
      },
    );
  }
  // No forward chain of our own: with policy accept its accepts would change nothing (an accept ends
  // only its own table), yet every forwarded packet would cross it. A forward chain of another
  // table that drops gets forwardRules instead.
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
