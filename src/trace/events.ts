/**
 * nftables trace events as `nft -a monitor` prints them, one base-chain pass per record:
 *
 *   trace id 030ab641 ip handmade forward packet: iif "flannel.1" oif "cni0" ... ip saddr 10.244.249.2 ... ip id 55287 ...
 *   trace id 030ab641 ip handmade forward rule ip saddr 10.244.249.2 tcp dport 80 counter comment "hand" # handle 14 (verdict continue)
 *   trace id 030ab641 ip handmade forward policy accept
 *
 * A `packet:` line opens a record; rule and policy lines of the same trace id join the latest one
 * (rules of chains it jumped to name their own chain).
 */
export interface TracedPacket {
  iif?: string;
  oif?: string;
  saddr?: string;
  daddr?: string;
  /** The IPv4 identification: kept by forwarding and NAT, so it names one packet across namespaces. */
  ipId?: number;
  ttl?: number;
  proto?: 'tcp' | 'udp' | 'icmp';
  sport?: number;
  dport?: number;
  tcpFlags?: string;
  icmpType?: string;
  icmpId?: number;
  /** The first 12 bytes after a UDP header as nft shows them raw (VXLAN: flags, VNI). */
  udpPayload?: string;
}

export interface TracedRule {
  chain: string;
  text: string;
  handle?: number;
  verdict: string;
}

export interface TraceRecord {
  traceId: string;
  family: string;
  table: string;
  chain: string;
  packet: TracedPacket;
  rules: TracedRule[];
  policy?: string;
}

const LINE = /^trace id (\S+) (\S+) (\S+) (\S+) (packet: |rule |policy |verdict )(.*)$/;

function num(text: string, re: RegExp): number | undefined {
  const m = re.exec(text);
  return m ? Number(m[1]) : undefined;
}

export function parsePacket(text: string): TracedPacket {
  const word = (re: RegExp) => re.exec(text)?.[1];
  const proto = /\btcp (sport|dport|flags)/.test(text) ? 'tcp' : /\budp (sport|dport)/.test(text) ? 'udp' : /\bicmp type/.test(text) ? 'icmp' : undefined;
  const p: TracedPacket = {
    iif: word(/\biif "([^"]+)"/),
    oif: word(/\boif "([^"]+)"/),
    saddr: word(/\bip saddr (\S+)/),
    daddr: word(/\bip daddr (\S+)/),
    ipId: num(text, /\bip id (\d+)/),
    ttl: num(text, /\bip ttl (\d+)/),
    proto,
  };
  if (proto === 'tcp' || proto === 'udp') {
    p.sport = num(text, new RegExp(`\\b${proto} sport (\\d+)`));
    p.dport = num(text, new RegExp(`\\b${proto} dport (\\d+)`));
  }
  if (proto === 'tcp') p.tcpFlags = word(/\btcp flags == (\S+)/);
  if (proto === 'icmp') {
    p.icmpType = word(/\bicmp type (\S+)/);
    p.icmpId = num(text, /\bicmp id (\d+)/);
  }
  if (proto === 'udp') p.udpPayload = word(/@th,64,96 0x([0-9a-f]+)/);
  for (const k of Object.keys(p) as (keyof TracedPacket)[]) if (p[k] === undefined) delete p[k];
  return p;
}

/** The VNI in a VXLAN header (RFC 7348: flags byte, 3 reserved, 3 bytes VNI, 1 reserved). */
export function vxlanVni(payload: string | undefined): number | undefined {
  if (!payload) return undefined;
  const hex = payload.padStart(24, '0');
  return parseInt(hex.slice(8, 14), 16);
}

export function parseTrace(lines: string[]): TraceRecord[] {
  const out: TraceRecord[] = [];
  const latest = new Map<string, TraceRecord>();
  for (const line of lines) {
    const m = LINE.exec(line.trimEnd());
    if (!m) continue;
    const [, traceId, family, table, chain, kind, rest] = m as unknown as [string, string, string, string, string, string, string];
    if (kind === 'packet: ') {
      const r: TraceRecord = { traceId, family, table, chain, packet: parsePacket(rest), rules: [] };
      out.push(r);
      latest.set(traceId, r);
      continue;
    }
    const r = latest.get(traceId);
    if (!r) continue;
    if (kind === 'rule ') {
      const rm = /^(.*?)(?: # handle (\d+))? \(verdict ([^)]+)\)$/.exec(rest);
      if (rm) r.rules.push({ chain, text: rm[1]!, ...(rm[2] && { handle: Number(rm[2]) }), verdict: rm[3]! });
    } else if (chain === r.chain) {
      r.policy = rest.trim();
    }
  }
  return out;
}
