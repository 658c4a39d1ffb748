import { parseArgs } from 'node:util';
import { serveUpstream } from './upstream.js';
import { serveRuntime } from './workload.js';

/**
 * A lab node's runtime: one process serving every pod of the node (workload.ts). Its own entry point,
 * not a `weft` subcommand, so that it loads only the workload (about half the memory of the whole CLI).
 */
const { values } = parseArgs({
  options: {
    socket: { type: 'string' },
    dns: { type: 'boolean', default: false },
  },
});
if (!values.socket) {
  console.error('usage: workload-main.js --socket PATH [--dns]');
  process.exit(2);
}
// The outside world's resolver (--dns) is up before the runtime answers, so "ready" includes it.
if (values.dns) await serveUpstream();
serveRuntime(values.socket);
