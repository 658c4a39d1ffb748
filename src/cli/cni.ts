import { copyFileSync, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CniError } from '../cni/spec.js';
import { DEFAULT_SOCKET, serveCni } from '../cni/serve.js';
import {
  addNetworkList,
  cachedAttachments,
  checkNetworkList,
  containerIdFor,
  DEFAULT_CACHE_DIR,
  DEFAULT_CNI_PATH,
  delNetworkList,
  gcNetworkList,
  loadNetworkList,
  statusNetworkList,
} from '../cni/runtime.js';
import { UsageError } from './usage.js';

export const FRONT = fileURLToPath(new URL('../../../build/weft-cni-front', import.meta.url));

/** Copies the thin front in as `weft` and `weft-ipam`; it picks its role from its own name. */
export function installPlugins(binDir: string): string[] {
  if (!existsSync(FRONT)) throw new Error(`${FRONT} is missing; run the set-up (./setup) or npm run build first`);
  mkdirSync(binDir, { recursive: true });
  return ['weft', 'weft-ipam'].map((name) => {
    const dest = join(binDir, name);
    copyFileSync(FRONT, `${dest}.tmp`);
    renameSync(`${dest}.tmp`, dest);
    return dest;
  });
}

export async function cniCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'install': {
      const { values } = parseArgs({ args: rest, options: { 'bin-dir': { type: 'string' }, 'conf-dir': { type: 'string' }, 'subnet-file': { type: 'string' } } });
      if (!values['bin-dir']) throw new UsageError('cni install needs --bin-dir DIR (where the runtime looks for plugins, e.g. /opt/cni/bin)');
      for (const f of installPlugins(values['bin-dir'])) console.log(`installed ${f}`);
      if (values['conf-dir']) {
        mkdirSync(values['conf-dir'], { recursive: true });
        const file = join(values['conf-dir'], '10-weft.conflist');
        const plugin: Record<string, unknown> = { type: 'weft' };
        if (values['subnet-file']) plugin.subnetFile = values['subnet-file'];
        writeFileSync(file, `${JSON.stringify({ cniVersion: '1.1.0', name: 'weft', plugins: [plugin] }, null, 2)}\n`);
        console.log(`wrote ${file}`);
      }
      return 0;
    }
    case 'serve': {
      const { values } = parseArgs({ args: rest, options: { socket: { type: 'string', default: DEFAULT_SOCKET }, quiet: { type: 'boolean' } } });
      const server = await serveCni(values.socket, values.quiet ? undefined : (m) => console.log(`${new Date().toISOString()} ${m}`));
      console.log(`weft cni serve: listening on ${values.socket}`);
      await new Promise<void>((resolve) => {
        for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => server.close(() => resolve()));
      });
      return 0;
    }
    case 'add':
    case 'check':
    case 'del':
      return runtimeCommand(sub, rest);
    case 'gc':
    case 'status': {
      const { values } = parseArgs({
        args: rest,
        options: { conf: { type: 'string' }, 'cni-path': { type: 'string' }, 'cache-dir': { type: 'string', default: DEFAULT_CACHE_DIR }, valid: { type: 'string', multiple: true } },
      });
      if (!values.conf) throw new UsageError(`cni ${sub} needs --conf FILE`);
      const list = loadNetworkList(values.conf);
      const cniPath = cniPathOf(values['cni-path']);
      return report(async () => {
        if (sub === 'status') return statusNetworkList(list, cniPath);
        const valid = values.valid
          ? values.valid.map((v) => {
              const [containerID = '', ifname = 'eth0'] = v.split('/');
              return { containerID, ifname };
            })
          : cachedAttachments(values['cache-dir'], list.name);
        return gcNetworkList(list, cniPath, valid);
      });
    }
    default:
      throw new UsageError(`unknown cni command "${sub ?? ''}"`);
  }
}

function cniPathOf(flag: string | undefined): string[] {
  return (flag ?? process.env.CNI_PATH ?? DEFAULT_CNI_PATH.join(':')).split(':').filter(Boolean);
}

async function runtimeCommand(sub: 'add' | 'check' | 'del', argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      conf: { type: 'string' },
      'container-id': { type: 'string' },
      ifname: { type: 'string', default: 'eth0' },
      'cni-path': { type: 'string' },
      'cache-dir': { type: 'string', default: DEFAULT_CACHE_DIR },
      args: { type: 'string' },
      'capability-args': { type: 'string' },
    },
  });
  if (!values.conf || positionals.length !== 1) throw new UsageError(`cni ${sub} needs --conf FILE and one NETNS (a name under /run/netns or a path)`);
  const netns = positionals[0]!.includes('/') ? positionals[0]! : `/run/netns/${positionals[0]}`;
  const list = loadNetworkList(values.conf);
  const opts = {
    cniPath: cniPathOf(values['cni-path']),
    cacheDir: values['cache-dir'],
    containerId: values['container-id'] ?? containerIdFor(netns),
    netns,
    ifname: values.ifname,
    ...(values.args ? { args: values.args } : {}),
    ...(values['capability-args'] ? { capabilityArgs: JSON.parse(values['capability-args']) as Record<string, unknown> } : {}),
  };
  return report(async () => {
    if (sub === 'add') console.log(JSON.stringify(await addNetworkList(list, opts), null, 2));
    else if (sub === 'check') await checkNetworkList(list, opts);
    else await delNetworkList(list, opts);
  });
}

async function report(fn: () => Promise<void>): Promise<number> {
  try {
    await fn();
    return 0;
  } catch (e) {
    if (!(e instanceof CniError)) throw e;
    console.error(`weft: ${e.message}${e.details ? ` (${e.details})` : ''} [CNI code ${e.code}]`);
    return 1;
  }
}
