import * as bridge from './bridge.js';
import { ipamCommand } from './ipam/plugin.js';
import { CniError, Code, encodeResult, LATEST, parseEnv, parseNetConf, SUPPORTED_VERSIONS, type Result } from './spec.js';

export type PluginName = 'weft' | 'weft-ipam';

export interface Request {
  plugin: PluginName;
  env: Record<string, string | undefined>;
  stdin: string;
}

export interface Response {
  exitCode: number;
  stdout: string;
}

/** One CNI invocation, whether the executable runs it itself (direct) or a warm process does (served). */
export async function handle(req: Request): Promise<Response> {
  let version = LATEST;
  try {
    const env = parseEnv(req.env);
    if (env.command === 'VERSION') {
      return ok({ cniVersion: LATEST, supportedVersions: SUPPORTED_VERSIONS });
    }
    const conf = parseNetConf(req.stdin, env.command);
    version = conf.cniVersion;
    let result: Result | undefined;
    if (req.plugin === 'weft-ipam') {
      result = await ipamCommand(conf, env);
    } else {
      switch (env.command) {
        case 'ADD':
          result = await bridge.add(conf, env);
          break;
        case 'DEL':
          await bridge.del(conf, env);
          break;
        case 'CHECK':
          await bridge.check(conf, env);
          break;
        case 'GC':
          await bridge.gc(conf, env);
          break;
        case 'STATUS':
          await bridge.status(conf, env);
          break;
      }
    }
    return ok(result ? encodeResult(result, version) : undefined);
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(Code.IO, e instanceof Error ? e.message : String(e));
    return { exitCode: 1, stdout: `${JSON.stringify(err.toJSON(version))}\n` };
  }
}

function ok(body: object | undefined): Response {
  return { exitCode: 0, stdout: body === undefined ? '' : `${JSON.stringify(body)}\n` };
}
