import type { NetworkConfig } from '../subnet/config.js';
import { HostGwBackend } from './hostgw.js';
import type { Backend, NodeInfo } from './types.js';
import { VxlanBackend } from './vxlan.js';

export type { Backend, DesiredState, NodeInfo } from './types.js';

export class BackendError extends Error {
  override name = 'BackendError';
  readonly code = 'unsupported-backend';
}

/** The backend the network config names; `vtepMac` is the VXLAN device's stable MAC. */
export function createBackend(config: NetworkConfig, node: NodeInfo, vtepMac: string): Backend {
  const b = config.backend;
  switch (b.type) {
    case 'vxlan':
      return new VxlanBackend(node, { vni: b.vni, port: b.port, directRouting: b.directRouting, mac: vtepMac, ...(b.mtu !== undefined ? { mtu: b.mtu } : {}) });
    case 'host-gw':
      return new HostGwBackend(node, b.mtu);
    case 'udp':
      throw new BackendError('the network config asks for the udp backend, which this weft agent does not implement yet; use "vxlan" or "host-gw" in Backend.Type');
  }
}
