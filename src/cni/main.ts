import { readFileSync } from 'node:fs';
import { handle, type PluginName } from './dispatch.js';

/** The direct path: this process does the work. argv[2] names the plugin (weft or weft-ipam). */
const plugin: PluginName = process.argv[2] === 'weft-ipam' ? 'weft-ipam' : 'weft';
let stdin = '';
try {
  stdin = readFileSync(0, 'utf8');
} catch {
  // no stdin: VERSION needs none, the rest report the decode error
}
const res = await handle({ plugin, env: process.env, stdin });
process.stdout.write(res.stdout);
process.exitCode = res.exitCode;
