import { add } from './add.js';
import { check, status } from './check.js';
import { ipamPlugin } from './ipam/plugin.js';
import { pluginMain, type Invocation, type PluginFuncs, type Response } from './skel.js';
import { del, gc } from './teardown.js';

export type PluginName = 'weft' | 'weft-ipam';

const PLUGINS: Record<PluginName, PluginFuncs> = {
  weft: { add, del, check, gc, status },
  'weft-ipam': ipamPlugin,
};

export interface Request extends Invocation {
  plugin: PluginName;
}

export type { Response };

/** One CNI invocation, whether the executable runs it itself (direct) or a warm process does (served). */
export function handle(req: Request): Promise<Response> {
  return pluginMain(PLUGINS[req.plugin], req);
}
