import { createHash } from 'node:crypto';
import type { Endpoint, Protocol, Service, ServicePort } from '../service/types.js';

/**
 * The service proxy's nftables tables as plain data, after kube-proxy's nftables mode: nat hook
 * chains jump to `services`, which looks `ip daddr . meta l4proto . th dport` up in the verdict
 * map `service-ips` (and, for packets to a local address, `meta l4proto . th dport` in
 * `service-nodeports`); the verdict goes to a per-service-port chain that picks an endpoint and
 * DNATs. Services without endpoints are rejected from nat hooks that run before the DNAT.
 *
 * Unlike kube-proxy there are no per-endpoint chains: the kernel walks every chain of the
 * namespace on each commit, so chains are what a change costs at scale. The endpoint is picked by
 * a hash of the flow (`jhash ip saddr . th sport`), which every rule of the chain computes alike,
 * so an endpoint is two rules (hairpin mark, DNAT) in its service chain.
 *
 * Everything a Service contributes is computed from that Service and its endpoints alone (a
 * Fragment), so one change is recomputed and diffed in O(its size), not O(table).
 */
export const PROXY_TABLE = 'weft-proxy';
export const PROXY_FAMILY = 'ip';
/**
 * The kernel re-validates a whole table (every chain reachable from its hooks) on each transaction
 * that adds a rule or a goto, so one table of 30,000 Services makes every change cost ~190 ms.
 * Services are spread over this many shard tables, each with its own nat hooks, dispatch maps and
 * the chains of its Services; a change validates one shard. The front table `weft-proxy` holds
 * the no-endpoint checks (reject/drop without endpoints) and masquerading.
 */
export const SHARDS = 32;
export const shardTable = (i: number): string => `${PROXY_TABLE}-${i}`;
export const PROXY_TABLES: readonly string[] = [PROXY_TABLE, ...Array.from({ length: SHARDS }, (_, i) => shardTable(i))];

/** The shard table of a Service (where its ClusterIP element in `service-ips` and its chains are). */
export const serviceTable = (namespace: string, name: string): string =>
  shardTable(createHash('sha256').update(`${namespace}/${name}`).digest().readUInt32BE(0) % SHARDS);
/** kube-proxy's masquerade bit. */
export const MASQ_MARK = 0x4000;

export const SERVICE_IPS = 'service-ips';
export const SERVICE_NODEPORTS = 'service-nodeports';
export const NO_ENDPOINT_SERVICES = 'no-endpoint-services';
export const NO_ENDPOINT_NODEPORTS = 'no-endpoint-nodeports';
export const MAPS = [SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS] as const;
export type MapName = (typeof MAPS)[number];
/** The table an element of `map` lives in, for a Service in shard table `shard`. */
export const mapTable = (map: MapName, shard: string): string => (map === NO_ENDPOINT_SERVICES || map === NO_ENDPOINT_NODEPORTS ? PROXY_TABLE : shard);
export const MARK_MASQ_CHAIN = 'mark-for-masquerade';
export const REJECT_CHAIN = 'reject-chain';

export interface ProxyNode {
  /** The node's name as endpoints carry it (EndpointSlice nodeName): Local traffic policies keep these. */
  name: string;
  /** The pod Network (CIDR): traffic from outside it to a ClusterIP is masqueraded. */
  podNetwork: string;
}

export type Verdict = { kind: 'jump' | 'goto'; chain: string } | { kind: 'drop' };

/** What a rule tests, in order; every test must hold. */
export type Match =
  | { m: 'daddr'; ip: string }
  /** `ip saddr ADDR` or `ip saddr != CIDR`. */
  | { m: 'saddr'; addr: string; not?: boolean }
  /** `tcp dport N` (the protocol test included). */
  | { m: 'dport'; proto: Protocol; port: number }
  | { m: 'fibSaddrLocal' }
  /**
   * `jhash ip saddr . th sport mod MOD seed SEED VALUE`: the flow's hash picks one of MOD endpoints.
   * Unlike `numgen random`, every rule computes the same pick, so an endpoint's hairpin mark and its
   * DNAT can be two rules of the service chain instead of an endpoint chain of their own.
   */
  | { m: 'pick'; mod: number; seed: number; value: number }
  | { m: 'saddrIn'; set: string };

export type Statement =
  | { s: 'verdict'; v: Verdict }
  /** DNAT to the endpoint; with `remember`, first `update @SET { ip saddr }` (session affinity). */
  | { s: 'dnat'; proto: Protocol; ip: string; port: number; remember?: string };

export interface Rule {
  match: Match[];
  then: Statement;
}

/** What one Service puts in the tables. */
export interface Fragment {
  /** Its shard table: chains, sets, and the service-ips/service-nodeports elements (see mapTable). */
  table: string;
  /** Regular chains and their rules. */
  chains: Map<string, Rule[]>;
  /** Affinity sets (ipv4_addr, dynamic, with the timeout in seconds). */
  sets: Map<string, number>;
  elements: Element[];
  /** UDP service ports and the endpoints their rules lead to, for conntrack cleanup. */
  udp: UdpTarget[];
  /** Endpoints the rules lead to (over all ports). */
  endpoints: number;
}

export interface Element {
  map: MapName;
  /** `ip . proto . port` (service-ips, no-endpoint-services) or `proto . port` (the nodeport maps). */
  key: string[];
  value: Verdict;
}

export interface UdpTarget {
  clusterIP: string;
  port: number;
  nodePort?: number;
  /** "ip:port" of each endpoint the rules DNAT to. */
  endpoints: string[];
}

const emptyFragment = (table: string): Fragment => ({ table, chains: new Map(), sets: new Map(), elements: [], udp: [], endpoints: 0 });

// ---- text ---------------------------------------------------------------------------------------

export const verdictText = (v: Verdict): string => (v.kind === 'drop' ? 'drop' : `${v.kind} ${v.chain}`);

function matchText(m: Match): string {
  switch (m.m) {
    case 'daddr':
      return `ip daddr ${m.ip}`;
    case 'saddr':
      return `ip saddr ${m.not ? '!= ' : ''}${m.addr}`;
    case 'dport':
      return `${m.proto.toLowerCase()} dport ${m.port}`;
    case 'fibSaddrLocal':
      return 'fib saddr type local';
    case 'pick':
      return `jhash ip saddr . th sport mod ${m.mod} seed 0x${m.seed.toString(16).padStart(8, '0')} ${m.value}`;
    case 'saddrIn':
      return `ip saddr @${m.set}`;
  }
}

function statementText(s: Statement): string {
  switch (s.s) {
    case 'verdict':
      return verdictText(s.v);
    case 'dnat':
      return `meta l4proto ${s.proto.toLowerCase()} ${s.remember ? `update @${s.remember} { ip saddr } ` : ''}dnat to ${s.ip}:${s.port}`;
  }
}

/** The rule as nft writes it (`nft list` prints the same text). */
export const ruleText = (r: Rule): string => [...r.match.map(matchText), statementText(r.then)].join(' ');

export const elementId = (e: { map: string; key: string[] }): string => `${e.map} ${e.key.join(' . ')}`;

/**
 * Each rule's comment: a hash of its whole chain and its index. Reading the comments back tells
 * whether a chain is exactly as wanted (a rule deleted, added or edited by hand shows as a
 * mismatch) without parsing rules back.
 */
export function chainComments(rules: readonly Rule[]): string[] {
  let out = commentsOf.get(rules);
  if (!out) {
    const hash = createHash('sha256').update(rules.map(ruleText).join('\n')).digest('hex').slice(0, 8);
    commentsOf.set(rules, (out = rules.map((_, i) => `${hash}:${i}`)));
  }
  return out;
}

/** A chain's rules are never changed once made, so their comments are computed once. */
const commentsOf = new WeakMap<readonly Rule[], string[]>();

// ---- names --------------------------------------------------------------------------------------

const hash8 = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 8).toUpperCase();

/** kube-proxy's naming: PREFIX + hash + readable `ns/name/proto/port`; `/` never appears in the fixed chains. */
const named = (prefix: string, base: string): string => `${prefix}${hash8(base)}-${base}`;

// ---- per service --------------------------------------------------------------------------------

interface PortEndpoint {
  ip: string;
  port: number;
  local: boolean;
  ready: boolean;
  servingTerminating: boolean;
}

/** Ready endpoints, or when there are none the serving-but-terminating ones (graceful termination). */
function usable(eps: PortEndpoint[]): PortEndpoint[] {
  const ready = eps.filter((e) => e.ready);
  return ready.length ? ready : eps.filter((e) => e.servingTerminating);
}

function portEndpoints(node: ProxyNode, sp: ServicePort, endpoints: Endpoint[]): PortEndpoint[] {
  const seen = new Map<string, PortEndpoint>();
  for (const e of endpoints) {
    const p = e.ports.find((x) => x.name === sp.name && x.protocol === sp.protocol);
    if (!p) continue;
    const id = `${e.ip}:${p.port}`;
    if (seen.has(id)) continue;
    seen.set(id, {
      ip: e.ip,
      port: p.port,
      local: e.nodeName === node.name,
      ready: e.conditions.ready,
      servingTerminating: e.conditions.serving && e.conditions.terminating,
    });
  }
  return [...seen.values()].sort((a, b) => (a.ip === b.ip ? a.port - b.port : a.ip < b.ip ? -1 : 1));
}

const goto = (chain: string): Statement => ({ s: 'verdict', v: { kind: 'goto', chain } });
const jump = (chain: string): Statement => ({ s: 'verdict', v: { kind: 'jump', chain } });

/**
 * The rules of one Service on `node`: for each port a `service-` chain (Cluster policy), a `local-`
 * chain (Local policies) and an `external-` chain (NodePort), affinity sets for ClientIP, and the
 * map elements that lead there (or to the reject/drop verdicts when nothing serves).
 */
export function serviceRules(node: ProxyNode, svc: Service, endpoints: Endpoint[]): Fragment {
  const f = emptyFragment(serviceTable(svc.namespace, svc.name));
  if (svc.type === 'ExternalName' || svc.clusterIP === undefined || svc.clusterIP === 'None') return f;
  const clusterIP = svc.clusterIP;
  const affinity = svc.sessionAffinity === 'ClientIP';
  for (const sp of svc.ports) {
    const proto = sp.protocol.toLowerCase();
    const base = `${svc.namespace}/${svc.name}/${proto}/${sp.name}`;
    const all = portEndpoints(node, sp, endpoints);
    const cluster = usable(all);
    const local = usable(all.filter((e) => e.local));
    const external = svc.type === 'NodePort' && sp.nodePort !== undefined;
    const internalLocal = svc.internalTrafficPolicy === 'Local';
    const externalLocal = external && svc.externalTrafficPolicy === 'Local';
    const hasEndpoints = cluster.length > 0;
    const hasInternal = internalLocal ? local.length > 0 : hasEndpoints;
    const hasExternal = externalLocal ? local.length > 0 : hasEndpoints;
    const usesCluster = hasEndpoints && (!internalLocal || external);
    const usesLocal = local.length > 0 && (internalLocal || externalLocal);

    const serviceChain = named('service-', base);
    const localChain = named('local-', base);
    const externalChain = named('external-', base);
    const affinitySet = (e: PortEndpoint) => named('affinity-', `${base}__${e.ip}/${e.port}@${svc.affinityTimeoutSeconds}`);
    const seed = createHash('sha256').update(base).digest().readUInt32BE(0);

    const reachable = new Map<string, PortEndpoint>();
    for (const e of [...(usesCluster ? cluster : []), ...(usesLocal ? local : [])]) reachable.set(`${e.ip}:${e.port}`, e);
    if (affinity) for (const e of reachable.values()) f.sets.set(affinitySet(e), svc.affinityTimeoutSeconds);

    // Traffic to the ClusterIP from outside the pod Network (the node itself, other hosts routed here) is masqueraded.
    const internalMasq: Rule = {
      match: [
        { m: 'daddr', ip: clusterIP },
        { m: 'dport', proto: sp.protocol, port: sp.port },
        { m: 'saddr', addr: node.podNetwork, not: true },
      ],
      then: jump(MARK_MASQ_CHAIN),
    };
    /** Per endpoint: a pod reaching itself is masqueraded (hairpin), then DNAT; a client with affinity first goes where it went before. */
    const toEndpoint = (e: PortEndpoint, when: Match[]): Rule[] => [
      { match: [...when, { m: 'saddr', addr: e.ip }], then: jump(MARK_MASQ_CHAIN) },
      { match: when, then: { s: 'dnat', proto: sp.protocol, ip: e.ip, port: e.port, ...(affinity ? { remember: affinitySet(e) } : {}) } },
    ];
    const pick = (eps: PortEndpoint[]): Rule[] => [
      ...(affinity ? eps.flatMap((e) => toEndpoint(e, [{ m: 'saddrIn', set: affinitySet(e) }])) : []),
      ...eps.flatMap((e, i) => toEndpoint(e, eps.length > 1 ? [{ m: 'pick', mod: eps.length, seed, value: i }] : [])),
    ];
    if (usesCluster) f.chains.set(serviceChain, [...(internalLocal ? [] : [internalMasq]), ...pick(cluster)]);
    if (usesLocal) f.chains.set(localChain, [...(internalLocal ? [internalMasq] : []), ...pick(local)]);

    const ipKey = [clusterIP, proto, String(sp.port)];
    if (hasInternal) f.elements.push({ map: SERVICE_IPS, key: ipKey, value: { kind: 'goto', chain: internalLocal ? localChain : serviceChain } });
    else f.elements.push({ map: NO_ENDPOINT_SERVICES, key: ipKey, value: hasEndpoints ? { kind: 'drop' } : { kind: 'goto', chain: REJECT_CHAIN } });

    if (external) {
      const npKey = [proto, String(sp.nodePort)];
      if (hasEndpoints) {
        f.elements.push({ map: SERVICE_NODEPORTS, key: npKey, value: { kind: 'goto', chain: externalChain } });
        f.chains.set(
          externalChain,
          externalLocal
            ? [
                // Pods and the node itself are not outside clients: they take the Cluster policy (kube-proxy's short-circuits).
                { match: [{ m: 'saddr', addr: node.podNetwork }], then: goto(serviceChain) },
                { match: [{ m: 'fibSaddrLocal' }], then: jump(MARK_MASQ_CHAIN) },
                { match: [{ m: 'fibSaddrLocal' }], then: goto(serviceChain) },
                ...(hasExternal ? [{ match: [], then: goto(localChain) }] : []),
              ]
            : [
                { match: [], then: jump(MARK_MASQ_CHAIN) },
                { match: [], then: goto(serviceChain) },
              ],
        );
      }
      if (!hasExternal)
        f.elements.push({ map: NO_ENDPOINT_NODEPORTS, key: npKey, value: hasEndpoints ? { kind: 'drop' } : { kind: 'goto', chain: REJECT_CHAIN } });
    }
    if (sp.protocol === 'UDP')
      f.udp.push({
        clusterIP,
        port: sp.port,
        ...(external ? { nodePort: sp.nodePort! } : {}),
        endpoints: [...reachable.values()].map((e) => `${e.ip}:${e.port}`),
      });
    f.endpoints += reachable.size;
  }
  return f;
}

// ---- the fixed part -----------------------------------------------------------------------------

export interface BaseChain {
  name: string;
  hook?: { type: 'nat'; hook: 'prerouting' | 'output' | 'postrouting'; priority: number };
  rules: string[];
}

/** dstnat - 10: the no-endpoint checks see the ClusterIP before the shards' nat chains DNAT it. */
const CHECK_PRIORITY = -110;
const DSTNAT = -100;
const SRCNAT = 100;

const LOOKUP_IPS = 'ip daddr . meta l4proto . th dport vmap';
const LOOKUP_NODEPORTS = 'fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap';

/**
 * The front table's chains: no-endpoint checks, reject, masquerading. The checks sit in nat hooks,
 * which conntrack runs for a flow's first packet only, as kube-proxy's `ct state new` test in filter
 * hooks means; a filter hook would cost every packet of every flow a chain (docs/architecture.md,
 * data path cost). Every packet crosses prerouting or output first, so the two see every new flow.
 */
export function frontChains(): BaseChain[] {
  const mark = `0x${MASQ_MARK.toString(16).padStart(8, '0')}`;
  return [
    { name: 'nat-prerouting', hook: { type: 'nat', hook: 'prerouting', priority: CHECK_PRIORITY }, rules: ['jump endpoints-check'] },
    { name: 'nat-output', hook: { type: 'nat', hook: 'output', priority: CHECK_PRIORITY }, rules: ['jump endpoints-check'] },
    { name: 'nat-postrouting', hook: { type: 'nat', hook: 'postrouting', priority: SRCNAT }, rules: ['jump masquerading'] },
    { name: 'endpoints-check', rules: [`${LOOKUP_IPS} @${NO_ENDPOINT_SERVICES}`, `${LOOKUP_NODEPORTS} @${NO_ENDPOINT_NODEPORTS}`] },
    { name: 'masquerading', rules: [`meta mark & ${mark} == 0x00000000 return`, `meta mark set meta mark ^ ${mark}`, 'masquerade fully-random'] },
    // TCP gets a reset: the kernel rate-limits ICMP errors per destination (6, then 1/s), and a SYN
    // that gets no answer waits for retransmits instead of failing at once.
    { name: REJECT_CHAIN, rules: ['meta l4proto tcp reject with tcp reset', 'reject'] },
  ];
}

/** A shard table's fixed chains: its nat hooks and the dispatch through its maps. */
export function shardChains(): BaseChain[] {
  const mark = `0x${MASQ_MARK.toString(16).padStart(8, '0')}`;
  return [
    { name: 'nat-prerouting', hook: { type: 'nat', hook: 'prerouting', priority: DSTNAT }, rules: ['jump services'] },
    { name: 'nat-output', hook: { type: 'nat', hook: 'output', priority: DSTNAT }, rules: ['jump services'] },
    { name: 'services', rules: [`${LOOKUP_IPS} @${SERVICE_IPS}`, `${LOOKUP_NODEPORTS} @${SERVICE_NODEPORTS}`] },
    { name: MARK_MASQ_CHAIN, rules: [`meta mark set meta mark | ${mark}`] },
  ];
}

/** Every table's fixed part: its chains and its maps. */
export function baseTables(): { table: string; chains: BaseChain[]; maps: MapName[] }[] {
  return PROXY_TABLES.map((table) =>
    table === PROXY_TABLE
      ? { table, chains: frontChains(), maps: [NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS] }
      : { table, chains: shardChains(), maps: [SERVICE_IPS, SERVICE_NODEPORTS] },
  );
}

export const MAP_TYPES: Record<MapName, string[]> = {
  [SERVICE_IPS]: ['ipv4_addr', 'inet_proto', 'inet_service'],
  [NO_ENDPOINT_SERVICES]: ['ipv4_addr', 'inet_proto', 'inet_service'],
  [SERVICE_NODEPORTS]: ['inet_proto', 'inet_service'],
  [NO_ENDPOINT_NODEPORTS]: ['inet_proto', 'inet_service'],
};

/** A base chain's comments: like chainComments, with its hook in the hash so a changed hook shows too. */
export function baseComments(c: BaseChain): string[] {
  const decl = c.hook ? `${c.hook.type} ${c.hook.hook} ${c.hook.priority}` : 'regular';
  const hash = createHash('sha256')
    .update([decl, ...c.rules].join('\n'))
    .digest('hex')
    .slice(0, 8);
  return c.rules.map((_, i) => `base:${hash}:${i}`);
}

// ---- the whole table ----------------------------------------------------------------------------

export interface ServiceEntry {
  service: Service;
  endpoints: Endpoint[];
}

/** Every Service's fragment, keyed by serviceKey. */
export function desiredRuleset(node: ProxyNode, entries: Iterable<[string, ServiceEntry]>): Map<string, Fragment> {
  const out = new Map<string, Fragment>();
  for (const [key, e] of entries) out.set(key, serviceRules(node, e.service, e.endpoints));
  return out;
}
