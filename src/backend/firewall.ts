import { createHash } from 'node:crypto';
import type { Firewall } from './types.js';

/** The agent's own nftables table (the CNI plugin's is `weft-cni`). */
export const TABLE = 'weft';
export const FAMILY = 'ip';
export const PEER_SET = 'vxlan_peers';
export const FORGED_COUNTER = 'vxlan_forged';

export interface ChainSpec {
  name: string;
  /** The base chain declaration, inside the braces. */
  decl: string;
  rules: string[];
  /** Comments the rules carry; a chain whose rules carry other comments is rewritten. */
  comments: string[];
}

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
      name: 'input',
      decl: 'type filter hook input priority filter - 10; policy accept;',
      rules: [`udp dport ${fw.vxlan.port} ip saddr @${PEER_SET} accept`, `udp dport ${fw.vxlan.port} counter name ${FORGED_COUNTER} drop`],
    });
  }
  chains.push({
    name: 'forward',
    decl: 'type filter hook forward priority filter; policy accept;',
    rules: [`ip saddr ${net} accept`, `ip daddr ${net} accept`],
  });
  if (fw.ipMasq) {
    // flannel's ip-masq rules: pod↔pod never NATed, pods → outside masqueraded except multicast,
    // and host-network traffic to remote pods gets a source the remote pod can answer.
    chains.push({
      name: 'postrouting',
      decl: 'type nat hook postrouting priority srcnat; policy accept;',
      rules: [
        `ip saddr ${net} ip daddr ${net} return`,
        `ip saddr != ${net} ip daddr ${own} return`,
        `ip saddr ${net} ip daddr != 224.0.0.0/4 masquerade fully-random`,
        `ip saddr != ${net} ip daddr ${net} masquerade fully-random`,
      ],
    });
  }
  return chains.map((c) => {
    const hash = createHash('sha256').update(`${c.decl}\n${c.rules.join('\n')}`).digest('hex').slice(0, 10);
    return { ...c, comments: c.rules.map((_, i) => `weft:${hash}:${i}`) };
  });
}
