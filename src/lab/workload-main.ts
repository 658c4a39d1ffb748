import { parseArgs } from 'node:util';
import { serveUpstream } from './upstream.js';
import { parsePorts, runContainer } from './workload.js';

/**
 * A pod container's process. Its own entry point, not a `weft` subcommand, so that each of the
 * lab's many containers loads only the workload (about half the memory of the whole CLI).
 */
const { values } = parseArgs({
  options: {
    pod: { type: 'string' },
    node: { type: 'string' },
    container: { type: 'string', default: 'app' },
    control: { type: 'string' },
    ports: { type: 'string', default: '' },
    dns: { type: 'boolean', default: false },
  },
});
if (!values.pod || !values.node || !values.control) {
  console.error('usage: workload-main.js --pod NAME --node NAME [--container app|sidecar] --control SOCKET [--ports PORT/TCP,PORT/UDP,...] [--dns]');
  process.exit(2);
}
let ports;
try {
  ports = parsePorts(values.ports);
} catch (e) {
  console.error((e as Error).message);
  process.exit(2);
}
// The outside world's resolver (--dns) is up before the control socket answers, so "ready" includes it.
if (values.dns) await serveUpstream();
runContainer({ pod: values.pod, node: values.node, container: values.container }, values.control, ports);
