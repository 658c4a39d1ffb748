import { agentCommands } from './agent.js';
import { benchCommands, benchGroup } from './bench.js';
import { cniCommands, cniGroup } from './cni.js';
import { dnsCommands, dnsGroup } from './dns.js';
import type { CommandSpec, GroupSpec } from './command.js';
import { labCommands, labGroup, labNodeGroup, labPodGroup } from './lab.js';
import { print } from './output.js';
import { podGroup, serviceCommands, serviceGroup } from './service.js';
import { traceCommands } from './trace.js';
import { uiCommands } from './ui.js';

/** The command table: every command, its options and help come from here. */
export const COMMANDS: CommandSpec[] = [
  ...labCommands,
  ...cniCommands,
  ...agentCommands,
  ...benchCommands,
  ...serviceCommands,
  ...dnsCommands,
  ...traceCommands,
  ...uiCommands,
  {
    path: ['sweep'],
    summary: 'remove namespaces left by crashed test runs',
    options: [],
    run: async () => {
      const { sweep } = await import('../topo/topology.js');
      const removed = await sweep();
      print(removed.length ? `removed ${removed.join(' ')}` : 'nothing to sweep');
      return 0;
    },
  },
];

export const GROUPS: GroupSpec[] = [
  labGroup,
  labPodGroup,
  labNodeGroup,
  cniGroup,
  benchGroup,
  serviceGroup,
  podGroup,
  dnsGroup,
  { path: ['network'], summary: 'the cluster-wide network config in etcd' },
];
