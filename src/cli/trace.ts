import { readState, validateLabName } from '../lab/state.js';
import { JSON_OPTION, type CommandSpec } from './command.js';
import { interruptSignal, print, printJson } from './output.js';

export const traceCommands: CommandSpec[] = [
  {
    path: ['trace'],
    summary: 'send one real packet through a lab and show every hop the kernel reports',
    positionals: [{ name: 'SRC' }, { name: 'DST' }],
    details:
      "SRC and DST are lab pods, nodes, Services (name or namespace/name), outside or IPs (DST only for an IP outside the lab). Hops come from the kernel's own tracing (nft monitor trace on a temporary table in each lab namespace on the path, removed afterwards), ip route get and conntrack; inferred hops are marked. A Service's port and protocol default to its first port. Exits 1 when the probe was dropped or not answered.",
    options: [
      { name: 'port', value: 'P', int: { min: 1, max: 65535 }, description: 'destination port (default: 80, or the Service port)' },
      { name: 'proto', value: 'PROTO', choices: ['tcp', 'udp', 'icmp'], description: 'probe protocol (default: tcp, or the Service port protocol)' },
      { name: 'name', value: 'LAB', default: 'weft', check: validateLabName, description: 'which lab' },
      JSON_OPTION,
    ],
    run: async (a) => {
      const { formatTrace, traceLab } = await import('../trace/trace.js');
      const proto = a.str('proto') as 'tcp' | 'udp' | 'icmp' | undefined;
      const port = a.num('port');
      const r = await traceLab(readState(a.str('name')!), a.positionals[0]!, a.positionals[1]!, {
        ...(proto && { proto }),
        ...(port !== undefined && { port }),
        signal: interruptSignal(),
      });
      if (a.bool('json')) printJson(r);
      else print(formatTrace(r));
      return r.outcome === 'delivered' ? 0 : 1;
    },
  },
];
