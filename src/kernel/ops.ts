import type { Tolerate } from './errors.js';
import type { Netns } from './exec.js';
import { renderTx, type NftTx } from './nft.js';

/**
 * Typed kernel changes, in the way vishvananda/netlink and knftables type them. Every op names the
 * namespace it targets (`ns`: a namespace file path, undefined for this process's own) and the
 * failures it treats as "already as wanted" (`tolerate`). An op is plain data: `render` prints it
 * as the iproute2/bridge/nft/sysctl command that does the same (the dry run), and apply.ts runs it
 * over rtnetlink, or over those tools where netlink is not spoken here (TUN devices, nftables).
 */
interface Target {
  ns: Netns;
  tolerate?: Tolerate;
}

export interface VethPeer {
  name: string;
  /** The namespace the peer goes to (a path); absent: stays with the first end. */
  netns?: Netns;
  mtu?: number;
  mac?: string;
}

export type LinkKind =
  | { kind: 'bridge' }
  | { kind: 'veth'; peer: VethPeer }
  | { kind: 'vxlan'; vni: number; local: string; dev: string; port: number; learning: boolean }
  | { kind: 'macvlan'; parent: string; mode: 'bridge' }
  | { kind: 'dummy' }
  | { kind: 'tun' };

export interface AddLink extends Target {
  op: 'addLink';
  name: string;
  mtu?: number;
  mac?: string;
  /** Created in this namespace (a path) instead of `ns` (macvlan into a pod). */
  netns?: Netns;
  link: LinkKind;
}

export interface SetLink extends Target {
  op: 'setLink';
  dev: string;
  up?: boolean;
  mtu?: number;
  mac?: string;
  /** A bridge to enslave to; null releases it. */
  master?: string | null;
  alias?: string;
  /** Bridge-port hairpin mode (the device must be a bridge port, or get `master` in this op). */
  hairpin?: boolean;
}

export interface DelLink extends Target {
  op: 'delLink';
  dev: string;
}

export interface AddrOp extends Target {
  op: 'addAddr' | 'replaceAddr' | 'delAddr';
  /** CIDR: 10.244.1.0/32. */
  addr: string;
  dev: string;
}

export interface RouteOp extends Target {
  op: 'addRoute' | 'replaceRoute' | 'delRoute';
  /** CIDR, or 'default'. */
  dst: string;
  via?: string;
  dev?: string;
  onlink?: boolean;
  /** A route that drops instead of forwarding (no via, no dev): unreachable answers ICMP host unreachable, blackhole is silent. */
  type?: 'unreachable' | 'blackhole';
}

export interface NeighOp extends Target {
  op: 'setNeigh' | 'delNeigh';
  dst: string;
  /** setNeigh: the permanent link-layer address. */
  mac?: string;
  dev: string;
}

export interface FdbOp extends Target {
  op: 'addFdb' | 'replaceFdb' | 'delFdb';
  mac: string;
  dev: string;
  /** The remote VTEP. */
  dst: string;
}

export interface SysctlOp extends Target {
  op: 'sysctl';
  /** Dotted (net.ipv4.ip_forward) or, where an interface name has a dot, slashed (net/ipv4/conf/flannel.1/rp_filter). */
  key: string;
  value: string;
}

export interface NftOp extends Target {
  op: 'nft';
  tx: NftTx;
}

export type Op = AddLink | SetLink | DelLink | AddrOp | RouteOp | NeighOp | FdbOp | SysctlOp | NftOp;

type With<T> = Omit<T, 'op'>;
const opt = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

type LinkBase = Target & { name: string; mtu?: number; mac?: string };

export const addBridge = (o: LinkBase): AddLink => opt({ op: 'addLink', ...o, link: { kind: 'bridge' } });
export const addVeth = (o: LinkBase & { peer: VethPeer }): AddLink => {
  const { peer, ...rest } = o;
  return opt({ op: 'addLink', ...rest, link: { kind: 'veth', peer: opt(peer) } });
};
export const addVxlan = (o: LinkBase & { vni: number; local: string; dev: string; port: number; learning?: boolean }): AddLink => {
  const { vni, local, dev, port, learning, ...rest } = o;
  return opt({ op: 'addLink', ...rest, link: { kind: 'vxlan', vni, local, dev, port, learning: learning ?? false } });
};
export const addMacvlan = (o: LinkBase & { parent: string; netns?: Netns }): AddLink => {
  const { parent, ...rest } = o;
  return opt({ op: 'addLink', ...rest, link: { kind: 'macvlan', parent, mode: 'bridge' } });
};
/** A device that drops what it is sent: a home for local addresses (node-local DNS) that no other link owns. */
export const addDummy = (o: LinkBase): AddLink => opt({ op: 'addLink', ...o, link: { kind: 'dummy' } });
/** A persistent TUN device without packet information (IFF_TUN | IFF_NO_PI), as `ip tuntap` makes it. */
export const addTun = (o: Target & { name: string }): AddLink => opt({ op: 'addLink', ...o, link: { kind: 'tun' } });
export const setLink = (o: With<SetLink>): SetLink => opt({ op: 'setLink', ...o });
export const delLink = (o: With<DelLink>): DelLink => opt({ op: 'delLink', ...o });
export const addAddr = (o: With<AddrOp>): AddrOp => opt({ op: 'addAddr', ...o });
export const replaceAddr = (o: With<AddrOp>): AddrOp => opt({ op: 'replaceAddr', ...o });
export const delAddr = (o: With<AddrOp>): AddrOp => opt({ op: 'delAddr', ...o });
export const addRoute = (o: With<RouteOp>): RouteOp => opt({ op: 'addRoute', ...o });
export const replaceRoute = (o: With<RouteOp>): RouteOp => opt({ op: 'replaceRoute', ...o });
export const delRoute = (o: With<RouteOp>): RouteOp => opt({ op: 'delRoute', ...o });
/** A permanent neighbour entry, replacing any other for `dst`. */
export const setNeigh = (o: With<NeighOp> & { mac: string }): NeighOp => opt({ op: 'setNeigh', ...o });
export const delNeigh = (o: Omit<With<NeighOp>, 'mac'>): NeighOp => opt({ op: 'delNeigh', ...o });
/** Permanent fdb entries of a VXLAN device (NTF_SELF): MAC → remote VTEP. */
export const addFdb = (o: With<FdbOp>): FdbOp => opt({ op: 'addFdb', ...o });
export const replaceFdb = (o: With<FdbOp>): FdbOp => opt({ op: 'replaceFdb', ...o });
export const delFdb = (o: With<FdbOp>): FdbOp => opt({ op: 'delFdb', ...o });
export const setSysctl = (o: Omit<With<SysctlOp>, 'tolerate'>): SysctlOp => opt({ op: 'sysctl', ...o });
export const nft = (o: With<NftOp>): NftOp => opt({ op: 'nft', ...o });

/** One command line of a tool, without the namespace prefix. */
export interface Command {
  tool: 'ip' | 'bridge' | 'nft' | 'sysctl';
  args: string[];
  /** nft's script on stdin. */
  input?: string;
}

const NAMED = /^(?:\/var)?\/run\/netns\/([^/]+)$/;
const nsWord = (ns: string): string => NAMED.exec(ns)?.[1] ?? ns;
const mtuMac = (o: { mtu?: number; mac?: string }): string[] => [...(o.mtu !== undefined ? ['mtu', String(o.mtu)] : []), ...(o.mac ? ['address', o.mac] : [])];

/** The commands that make the same change as `op`. */
export function commands(op: Op): Command[] {
  const ip = (...args: string[]): Command => ({ tool: 'ip', args });
  switch (op.op) {
    case 'addLink': {
      const l = op.link;
      const into = op.netns ? ['netns', nsWord(op.netns)] : [];
      switch (l.kind) {
        case 'bridge':
          return [ip('link', 'add', 'name', op.name, ...mtuMac(op), 'type', 'bridge')];
        case 'veth':
          return [
            ip(
              'link',
              'add',
              'name',
              op.name,
              ...mtuMac(op),
              'type',
              'veth',
              'peer',
              'name',
              l.peer.name,
              ...mtuMac(l.peer),
              ...(l.peer.netns ? ['netns', nsWord(l.peer.netns)] : []),
            ),
          ];
        case 'vxlan':
          return [
            ip(
              'link',
              'add',
              'name',
              op.name,
              ...mtuMac(op),
              'type',
              'vxlan',
              'id',
              String(l.vni),
              'local',
              l.local,
              'dev',
              l.dev,
              'dstport',
              String(l.port),
              ...(l.learning ? [] : ['nolearning']),
            ),
          ];
        case 'macvlan':
          return [ip('link', 'add', 'link', l.parent, 'name', op.name, ...mtuMac(op), ...into, 'type', 'macvlan', 'mode', l.mode)];
        case 'dummy':
          return [ip('link', 'add', 'name', op.name, ...mtuMac(op), 'type', 'dummy')];
        case 'tun':
          return [ip('tuntap', 'add', 'dev', op.name, 'mode', 'tun')];
      }
    }
    // falls through: every kind returns
    case 'setLink': {
      const set = [
        ...mtuMac(op),
        ...(op.master === null ? ['nomaster'] : op.master !== undefined ? ['master', op.master] : []),
        ...(op.alias !== undefined ? ['alias', op.alias] : []),
        ...(op.up === undefined ? [] : [op.up ? 'up' : 'down']),
      ];
      const out = set.length ? [ip('link', 'set', 'dev', op.dev, ...set)] : [];
      if (op.hairpin !== undefined) out.push(ip('link', 'set', 'dev', op.dev, 'type', 'bridge_slave', 'hairpin', op.hairpin ? 'on' : 'off'));
      return out;
    }
    case 'delLink':
      return [ip('link', 'del', 'dev', op.dev)];
    case 'addAddr':
    case 'replaceAddr':
    case 'delAddr':
      return [ip('addr', op.op === 'addAddr' ? 'add' : op.op === 'replaceAddr' ? 'replace' : 'del', op.addr, 'dev', op.dev)];
    case 'addRoute':
    case 'replaceRoute':
    case 'delRoute':
      return [
        ip(
          'route',
          op.op === 'addRoute' ? 'add' : op.op === 'replaceRoute' ? 'replace' : 'del',
          ...(op.type ? [op.type] : []),
          op.dst,
          ...(op.via ? ['via', op.via] : []),
          ...(op.dev ? ['dev', op.dev] : []),
          ...(op.onlink ? ['onlink'] : []),
        ),
      ];
    case 'setNeigh':
      return [ip('neigh', 'replace', op.dst, 'lladdr', op.mac!, 'dev', op.dev, 'nud', 'permanent')];
    case 'delNeigh':
      return [ip('neigh', 'del', op.dst, 'dev', op.dev)];
    case 'addFdb':
    case 'replaceFdb':
    case 'delFdb':
      return [
        {
          tool: 'bridge',
          args: [
            'fdb',
            op.op === 'addFdb' ? 'add' : op.op === 'replaceFdb' ? 'replace' : 'del',
            op.mac,
            'dev',
            op.dev,
            'dst',
            op.dst,
            'self',
            ...(op.op === 'delFdb' ? [] : ['permanent']),
          ],
        },
      ];
    case 'sysctl':
      return [{ tool: 'sysctl', args: ['-w', `${op.key}=${op.value}`] }];
    case 'nft':
      return [{ tool: 'nft', args: ['-f', '-'], input: renderTx(op.tx) }];
  }
}

const quote = (word: string): string => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);

/** The argv prefix that runs `tool` in `ns`: iproute2's -n for named namespaces, else nsenter. */
export function nsArgv(ns: Netns, tool: Command['tool']): string[] {
  if (ns === undefined) return [tool];
  const named = NAMED.exec(ns);
  if (named && (tool === 'ip' || tool === 'bridge')) return [tool, '-n', named[1]!];
  return ['nsenter', `--net=${ns}`, tool];
}

/** Shell lines for `op`: what a dry run prints. */
export function renderOp(op: Op): string[] {
  return commands(op).map((c) => {
    const line = [...nsArgv(op.ns, c.tool), ...c.args].map(quote).join(' ');
    return c.input === undefined ? line : `${line} <<'EOF'\n${c.input.trimEnd()}\nEOF`;
  });
}
