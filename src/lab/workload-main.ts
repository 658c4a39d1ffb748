import { parseArgs } from 'node:util';
import { runContainer } from './workload.js';

/**
 * A pod container's process. Its own entry point, not a `weft` subcommand, so that each of the
 * lab's many containers loads only the workload (about half the memory of the whole CLI).
 */
const { values } = parseArgs({
  options: { pod: { type: 'string' }, node: { type: 'string' }, container: { type: 'string', default: 'app' }, control: { type: 'string' } },
});
if (!values.pod || !values.node || !values.control) {
  console.error('usage: workload-main.js --pod NAME --node NAME [--container app|sidecar] --control SOCKET');
  process.exit(2);
}
runContainer({ pod: values.pod, node: values.node, container: values.container }, values.control);
