import { join } from 'node:path';
import type { Netns } from '../kernel/exec.js';
import { localLinkNames } from '../kernel/state.js';
import type { Cidr } from '../ip/cidr.js';
import { findPlugin } from './invoke.js';
import * as ipam from './ipam/ipam.js';
import { Code, CniError, type DNS, type Env, type NetConf } from './spec.js';

/** The node's own namespace: the one the plugin runs in. */
export const HOST: Netns = undefined;

/** The weft plugin's own fields; everything else in the config passes through untouched. */
export interface BridgeConf {
  /**
   * bridge: a veth to the node's bridge (overlay and routing); routed: a veth with no bridge, a /32
   * route to the pod and a link-local gateway in it (routed.ts); macvlan: a child of `master` (underlay).
   */
  mode: 'bridge' | 'routed' | 'macvlan';
  master?: string;
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  ipMasq: boolean;
  mtu?: number;
  hairpinMode: boolean;
  /**
   * Bridge mode, `"staticNeighbours": true` (default false): the pod gets a permanent neighbour entry
   * for its gateway (the bridge's MAC) and the bridge one for the pod's address (the pod's MAC), so
   * a pod and its node never ARP for each other. For hosts with many pods: the kernel's neighbour
   * table is one for all namespaces, capped by gc_thresh3, and permanent entries do not count.
   */
  staticNeighbours: boolean;
  /** The IPAM plugin to exec, or undefined when weft-ipam runs in this process. */
  ipamPlugin?: string;
  ipamConfig?: ipam.IpamConfig;
  /** What the ADD result's `dns` carries (absent: none). */
  dns?: DNS;
}

export const DEFAULT_CLUSTER_DNS = ['10.96.0.10'];
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

/**
 * The pod's resolver settings, as kubelet writes them for ClusterFirst pods: the cluster DNS, the
 * search path of the pod's namespace (CNI_ARGS K8S_POD_NAMESPACE, default `default`), ndots:5.
 * `clusterDNS` (default ["10.96.0.10"]; [] for none) and `clusterDomain` (default cluster.local)
 * change it; a `dns` section in the config (the CNI spec's) is taken as it is instead.
 */
export function podDns(conf: NetConf, env: Env): DNS | undefined {
  if (conf.dns !== undefined) {
    if (typeof conf.dns !== 'object' || conf.dns === null || Array.isArray(conf.dns))
      throw new CniError(Code.InvalidConfig, '"dns" must be an object', 'e.g. {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}');
    return conf.dns;
  }
  const servers = conf.clusterDNS ?? DEFAULT_CLUSTER_DNS;
  if (!Array.isArray(servers) || !servers.every((x) => typeof x === 'string' && /^\d{1,3}(\.\d{1,3}){3}$/.test(x)))
    throw new CniError(Code.InvalidConfig, `"clusterDNS" ${JSON.stringify(servers)} is not a list of IPv4 addresses`, 'e.g. ["10.96.0.10"], or [] for none');
  const zone = conf.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
  if (typeof zone !== 'string' || !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(zone))
    throw new CniError(Code.InvalidConfig, `"clusterDomain" ${JSON.stringify(zone)} is not a DNS name`, 'e.g. "cluster.local"');
  if (servers.length === 0) return undefined;
  const ns = env.args.get('K8S_POD_NAMESPACE') || 'default';
  return { nameservers: servers as string[], search: [`${ns}.svc.${zone}`, `svc.${zone}`, zone], options: ['ndots:5'] };
}

/**
 * Reads the config. Without an `ipam` section the node's subnet comes from subnet.env, as flannel's
 * CNI plugin does it: the subnet's range, a route to the whole network, its MTU, isGateway, and
 * ipMasq unless the agent already masquerades (FLANNEL_IPMASQ=true).
 */
export function parseBridgeConf(conf: NetConf, env: Env): BridgeConf {
  const bool = (name: string, dflt: boolean): boolean => {
    const v = conf[name];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw new CniError(Code.InvalidConfig, `"${name}" must be true or false, not ${JSON.stringify(v)}`);
    return v;
  };
  const bridge = conf.bridge ?? 'cni0';
  if (typeof bridge !== 'string' || !/^[^/:\s]{1,15}$/.test(bridge)) {
    throw new CniError(
      Code.InvalidConfig,
      `"bridge" ${JSON.stringify(bridge)} is not a valid interface name`,
      'use 1-15 characters without "/", ":" or whitespace',
    );
  }
  let mtu: number | undefined;
  if (conf.mtu !== undefined) {
    if (typeof conf.mtu !== 'number' || !Number.isInteger(conf.mtu) || conf.mtu < 68 || conf.mtu > 65535) {
      throw new CniError(Code.InvalidConfig, `"mtu" ${JSON.stringify(conf.mtu)} is invalid`, 'use a whole number from 68 to 65535');
    }
    mtu = conf.mtu;
  }
  const mode = conf.mode ?? 'bridge';
  if (mode !== 'bridge' && mode !== 'routed' && mode !== 'macvlan')
    throw new CniError(Code.InvalidConfig, `"mode" ${JSON.stringify(mode)} is not supported`, 'use "bridge" (default), "routed" or "macvlan"');
  const out: BridgeConf = {
    mode,
    bridge,
    isGateway: bool('isGateway', false),
    isDefaultGateway: bool('isDefaultGateway', false),
    ipMasq: bool('ipMasq', false),
    hairpinMode: bool('hairpinMode', false),
    staticNeighbours: bool('staticNeighbours', false),
  };
  if (out.isDefaultGateway && mode === 'bridge') out.isGateway = true;
  // A routed pod's every packet goes through the node (add.ts turns forwarding on for a gateway);
  // hairpinMode (a bridge port flag) has nothing to set: hairpin traffic is routed back out the veth.
  if (mode === 'routed') out.isGateway = true;
  if (mode === 'macvlan') {
    if (typeof conf.master !== 'string' || conf.master === '') {
      throw new CniError(Code.InvalidConfig, 'macvlan mode needs "master"', 'name the node\'s underlay interface, e.g. "master": "eth0"');
    }
    if (env.command === 'ADD' && !localLinkNames().has(conf.master)) {
      throw new CniError(Code.InvalidConfig, `"master" ${conf.master} does not exist in this namespace`, "name the node's underlay interface");
    }
    if (out.ipMasq || out.isGateway || out.hairpinMode || out.staticNeighbours) {
      throw new CniError(
        Code.InvalidConfig,
        'ipMasq, isGateway, hairpinMode and staticNeighbours do not apply to macvlan mode',
        'pods sit on the underlay itself: remove them',
      );
    }
    out.master = conf.master;
  }
  const ipamSection = conf.ipam;
  if (ipamSection && ipamSection.type !== 'weft-ipam') {
    if (typeof ipamSection.type !== 'string')
      throw new CniError(Code.InvalidConfig, '"ipam.type" is missing', 'name an IPAM plugin, e.g. "host-local" or "weft-ipam"');
    if (env.command !== 'GC' && env.command !== 'STATUS') out.ipamPlugin = findPlugin(ipamSection.type, env.path);
    else out.ipamPlugin = ipamSection.type;
  } else if (ipamSection) {
    out.ipamConfig = ipam.parseIpamConfig(ipamSection, conf.name);
  } else {
    const subnetFile = typeof conf.subnetFile === 'string' ? conf.subnetFile : ipam.DEFAULT_SUBNET_FILE;
    const flannel = ipam.readSubnetFile(subnetFile);
    const section: Record<string, unknown> = { subnetFile };
    if (typeof conf.dataDir === 'string') section.dataDir = conf.dataDir;
    out.ipamConfig = ipam.parseIpamConfig(section, conf.name);
    mtu ??= flannel.mtu;
    if (conf.isGateway === undefined || mode === 'routed') out.isGateway = true;
    if (conf.ipMasq === undefined) out.ipMasq = !flannel.ipMasq;
  }
  if (mtu !== undefined) out.mtu = mtu;
  const dns = podDns(conf, env);
  if (dns) out.dns = dns;
  return out;
}

/**
 * What DEL and GC need, read without failing on a subnet file that is already gone: DEL must succeed
 * then, and still release the address.
 */
export interface Teardown {
  dataDir?: string;
  ipamType?: string;
  ipMasq: boolean;
  ranges: Cidr[];
}

export function teardownConf(conf: NetConf): Teardown {
  const section = conf.ipam;
  if (section && section.type !== 'weft-ipam') return { ipamType: String(section.type), ipMasq: conf.ipMasq === true, ranges: [] };
  const subnetFile = typeof conf.subnetFile === 'string' ? conf.subnetFile : ipam.DEFAULT_SUBNET_FILE;
  const dir = typeof section?.dataDir === 'string' ? section.dataDir : typeof conf.dataDir === 'string' ? conf.dataDir : ipam.DEFAULT_DATA_DIR;
  const out: Teardown = { dataDir: join(dir, conf.name), ipMasq: conf.ipMasq === true, ranges: [] };
  try {
    const parsed = ipam.parseIpamConfig(section ?? { subnetFile }, conf.name);
    out.ranges = parsed.rangesets.flat().map((r) => r.subnet);
    if (!section && conf.ipMasq === undefined) out.ipMasq = !ipam.readSubnetFile(subnetFile).ipMasq;
  } catch (e) {
    if (!(e instanceof CniError)) throw e;
    // Without the subnet file we cannot tell whether ADD masqueraded; removing a missing element is harmless.
    if (!section && conf.ipMasq === undefined) out.ipMasq = true;
  }
  return out;
}
