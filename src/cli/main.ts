import { parseArgs } from 'node:util';
import { cniCommand } from './cni.js';
import { benchCommand } from './bench.js';
import { agentCommand, networkCommand } from './agent.js';
import { labCommand, verifyCommand } from './lab.js';
import { sweep } from '../testing/topo.js';
import { UsageError } from './usage.js';

const USAGE = `weft: Kubernetes-style pod networking for Linux

Usage:
  weft lab up [--nodes N] [--pods-per-node M] [--backend vxlan|host-gw|udp] [--mode overlay|underlay] [--name LAB]
                                                    a whole cluster network on this machine, in namespaces
  weft verify [--name LAB] [--json]                 check the Kubernetes network model on a lab
  weft lab status|down [--name LAB]                 show or remove a lab
  weft lab exec [--name LAB] NODE|POD -- CMD        run a command in a node or pod (names resolve to IPs)
  weft lab pod add NAME --node N | pod rm NAME      add or remove a pod through the CNI plugin
  weft lab node add [NAME] | node rm NAME           a node joins or leaves
  weft cni install --bin-dir DIR [--conf-dir DIR]   install the weft and weft-ipam CNI plugins
  weft cni serve [--socket PATH]                    serve CNI requests from a warm process
  weft cni add|check|del --conf FILE NETNS          run a conflist against a namespace, as a runtime does
  weft cni gc|status --conf FILE                    garbage-collect, or ask whether ADD can succeed
  weft agent --node NAME --etcd-endpoints URL ...   run the node agent (flanneld-compatible); see weft agent --help
  weft agent status --state-dir DIR                 the agent's lease, remote leases, desired vs programmed state
  weft network init --config JSON|FILE --etcd-endpoints URL   write and validate the network config
  weft bench cni [--pods N] [--concurrent N]        CNI latency and CPU against the reference plugins
  weft sweep                                        remove namespaces left by crashed test runs

Run a command with --help for its options.`;

async function main(argv: string[]): Promise<number> {
  const [group, ...rest] = argv;
  switch (group) {
    case 'cni':
      return cniCommand(rest);
    case 'bench':
      return benchCommand(rest);
    case 'agent':
      return agentCommand(rest);
    case 'network':
      return networkCommand(rest);
    case 'lab':
      return labCommand(rest);
    case 'verify':
      return verifyCommand(rest);
    case 'sweep': {
      parseArgs({ args: rest, options: {} });
      const removed = await sweep();
      console.log(removed.length ? `removed ${removed.join(' ')}` : 'nothing to sweep');
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return group === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${group}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const err = e as Error & { code?: unknown };
    if (e instanceof UsageError || (typeof err.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS'))) {
      console.error(`weft: ${err.message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else {
      console.error(`weft: ${err.message ?? String(e)}`);
      process.exitCode = 1;
    }
  },
);
