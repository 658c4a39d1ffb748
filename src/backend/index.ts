import type { NetworkConfig } from '../subnet/config.js';
import { HostGwBackend } from './hostgw.js';
import type { Backend, NodeInfo } from './types.js';
import { UdpBackend } from './udp.js';
import { UdpDatapath } from './udp-datapath.js';
import { VxlanBackend } from './vxlan.js';

export type { Backend, DesiredState, NodeInfo } from './types.js';

export class BackendError extends Error {
  override name = 'BackendError';
  readonly code = 'unsupported-backend';
}

/**
 * The backend the network config names; `vtepMac` is the VXLAN device's stable MAC. `log` receives
 * the udp packet loop's messages; `datapath: false` builds a udp backend without its packet loop
 * (plans and status only).
 */
export function createBackend(
  config: NetworkConfig,
  node: NodeInfo,
  vtepMac: string,
  opts: { log?: (msg: string, fields?: Record<string, unknown>) => void; datapath?: boolean } = {},
): Backend {
  const b = config.backend;
  switch (b.type) {
    case 'vxlan':
      return new VxlanBackend(node, { vni: b.vni, port: b.port, directRouting: b.directRouting, mac: vtepMac, ...(b.mtu !== undefined ? { mtu: b.mtu } : {}) });
    case 'host-gw':
      return new HostGwBackend(node, b.mtu);
    case 'udp':
      return new UdpBackend(
        node,
        { port: b.port, ...(b.mtu !== undefined ? { mtu: b.mtu } : {}) },
        opts.datapath === false ? undefined : new UdpDatapath(opts.log),
      );
  }
}
