import { Code, CniError, encodeResult, LATEST, parseEnv, parseNetConf, SUPPORTED_VERSIONS, type Env, type NetConf, type Result } from './spec.js';

/**
 * A plugin's command functions, as the reference plugins hand them to skel.PluginMainFuncs. The
 * plugin only does the work; `pluginMain` parses the environment and config, answers VERSION,
 * negotiates the result's version and turns any failure into the spec's error JSON.
 */
export interface PluginFuncs {
  add(conf: NetConf, env: Env): Promise<Result>;
  del(conf: NetConf, env: Env): Promise<void>;
  check(conf: NetConf, env: Env): Promise<void>;
  gc(conf: NetConf, env: Env): Promise<void>;
  status(conf: NetConf, env: Env): Promise<void>;
}

/** One invocation: the CNI_* environment and the config bytes from stdin. */
export interface Invocation {
  env: Record<string, string | undefined>;
  stdin: string;
}

export interface Response {
  exitCode: number;
  stdout: string;
}

export async function pluginMain(funcs: PluginFuncs, inv: Invocation): Promise<Response> {
  let version = LATEST;
  try {
    const env = parseEnv(inv.env);
    if (env.command === 'VERSION') return ok({ cniVersion: LATEST, supportedVersions: SUPPORTED_VERSIONS });
    const conf = parseNetConf(inv.stdin, env.command);
    version = conf.cniVersion;
    switch (env.command) {
      case 'ADD':
        return ok(encodeResult(await funcs.add(conf, env), version));
      case 'DEL':
        await funcs.del(conf, env);
        break;
      case 'CHECK':
        await funcs.check(conf, env);
        break;
      case 'GC':
        await funcs.gc(conf, env);
        break;
      case 'STATUS':
        await funcs.status(conf, env);
        break;
    }
    return ok(undefined);
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(Code.IO, e instanceof Error ? e.message : String(e));
    return { exitCode: 1, stdout: `${JSON.stringify(err.toJSON(version))}\n` };
  }
}

function ok(body: object | undefined): Response {
  return { exitCode: 0, stdout: body === undefined ? '' : `${JSON.stringify(body)}\n` };
}
