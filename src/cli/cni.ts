import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { installPlugins } from '../cni/install.js';
import { CniError } from '../cni/spec.js';
import { CNI_SOCKET } from '../util/paths.js';
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
import type { Args, CommandSpec, GroupSpec, OptionSpec, Positional } from './command.js';
import { print, printJson, warn } from './output.js';
import { UsageError } from './usage.js';
import { writeFileAtomic } from '../util/file.js';

export const cniGroup: GroupSpec = { path: ['cni'], summary: "the weft CNI plugins, and a runtime's view of any conflist (like cnitool)" };

const CONF: OptionSpec = { name: 'conf', value: 'FILE', required: true, description: 'the network config list (.conflist, or a single .conf)' };
const CNI_PATH: OptionSpec = {
  name: 'cni-path',
  value: 'DIRS',
  description: 'colon-separated plugin directories (default: $CNI_PATH, else ' + DEFAULT_CNI_PATH.join(':') + ')',
};
const CACHE_DIR: OptionSpec = { name: 'cache-dir', value: 'DIR', default: DEFAULT_CACHE_DIR, description: "the runtime's result cache" };
const NETNS: Positional = { name: 'NETNS' };

function runtimeSpec(sub: 'add' | 'check' | 'del', summary: string): CommandSpec {
  return {
    path: ['cni', sub],
    summary,
    details: 'NETNS is a name under /run/netns or a path.',
    positionals: [NETNS],
    options: [
      CONF,
      { name: 'container-id', value: 'ID', description: "the attachment's container ID (default: derived from NETNS)" },
      { name: 'ifname', value: 'NAME', default: 'eth0', description: 'the interface inside the namespace' },
      CNI_PATH,
      CACHE_DIR,
      { name: 'args', value: 'K=V;...', description: 'CNI_ARGS' },
      { name: 'capability-args', value: 'JSON', description: "runtimeConfig for the plugins' capabilities, e.g. '{\"portMappings\":[]}'" },
    ],
    run: (a) => runtimeCommand(sub, a),
  };
}

export const cniCommands: CommandSpec[] = [
  {
    path: ['cni', 'install'],
    summary: 'install the weft and weft-ipam plugins',
    options: [
      { name: 'bin-dir', value: 'DIR', required: true, description: 'where the runtime looks for plugins, e.g. /opt/cni/bin' },
      { name: 'conf-dir', value: 'DIR', brief: true, description: 'also write 10-weft.conflist here, e.g. /etc/cni/net.d' },
      { name: 'subnet-file', value: 'PATH', description: "the subnet.env the conflist names (default: the plugin's, /run/flannel/subnet.env)" },
    ],
    run: (a) => {
      for (const f of installPlugins(a.str('bin-dir')!)) print(`installed ${f}`);
      const confDir = a.str('conf-dir');
      if (confDir) {
        mkdirSync(confDir, { recursive: true });
        const file = join(confDir, '10-weft.conflist');
        const plugin: Record<string, unknown> = { type: 'weft' };
        const subnetFile = a.str('subnet-file');
        if (subnetFile) plugin.subnetFile = subnetFile;
        writeFileAtomic(file, `${JSON.stringify({ cniVersion: '1.1.0', name: 'weft', plugins: [plugin] }, null, 2)}\n`);
        print(`wrote ${file}`);
      }
      return 0;
    },
  },
  {
    path: ['cni', 'serve'],
    summary: 'serve CNI requests from a warm process (the fast path)',
    details: 'Runs until SIGTERM or SIGINT.',
    options: [
      { name: 'socket', value: 'PATH', brief: true, default: CNI_SOCKET, description: 'the unix socket the plugin forwards to' },
      { name: 'quiet', description: 'do not log each request' },
    ],
    run: async (a) => {
      const { serveCni } = await import('../cni/serve.js');
      const socket = a.str('socket')!;
      const server = await serveCni(socket, a.bool('quiet') ? undefined : (m) => print(`${new Date().toISOString()} ${m}`));
      print(`weft cni serve: listening on ${socket}`);
      await new Promise<void>((resolve) => {
        for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => server.close(() => resolve()));
      });
      return 0;
    },
  },
  runtimeSpec('add', "run a conflist's ADD on a namespace, as a runtime does"),
  runtimeSpec('check', "run a conflist's CHECK on a namespace"),
  runtimeSpec('del', "run a conflist's DEL on a namespace"),
  {
    path: ['cni', 'gc'],
    summary: 'release what no valid attachment uses',
    options: [
      CONF,
      CNI_PATH,
      CACHE_DIR,
      { name: 'valid', value: 'ID[/IFNAME]', multiple: true, description: 'an attachment still in use (default: those in --cache-dir)' },
    ],
    run: async (a) => {
      const list = loadNetworkList(a.str('conf')!);
      const valid = a.list('valid').length
        ? a.list('valid').map((v) => {
            const [containerID = '', ifname = 'eth0'] = v.split('/');
            return { containerID, ifname };
          })
        : cachedAttachments(a.str('cache-dir')!, list.name);
      return report(() => gcNetworkList(list, cniPathOf(a.str('cni-path')), valid));
    },
  },
  {
    path: ['cni', 'status'],
    summary: 'ask the plugins whether an ADD can succeed',
    options: [CONF, CNI_PATH],
    run: async (a) => report(() => statusNetworkList(loadNetworkList(a.str('conf')!), cniPathOf(a.str('cni-path')))),
  },
];

function cniPathOf(flag: string | undefined): string[] {
  return (flag ?? process.env.CNI_PATH ?? DEFAULT_CNI_PATH.join(':')).split(':').filter(Boolean);
}

async function runtimeCommand(sub: 'add' | 'check' | 'del', a: Args): Promise<number> {
  const where = a.positionals[0]!;
  const netns = where.includes('/') ? where : `/run/netns/${where}`;
  let capabilityArgs: Record<string, unknown> | undefined;
  const caps = a.str('capability-args');
  if (caps !== undefined) {
    try {
      capabilityArgs = JSON.parse(caps) as Record<string, unknown>;
    } catch {
      throw new UsageError(`--capability-args is not JSON: ${caps}`);
    }
  }
  const list = loadNetworkList(a.str('conf')!);
  const args = a.str('args');
  const opts = {
    cniPath: cniPathOf(a.str('cni-path')),
    cacheDir: a.str('cache-dir')!,
    containerId: a.str('container-id') ?? containerIdFor(netns),
    netns,
    ifname: a.str('ifname')!,
    ...(args ? { args } : {}),
    ...(capabilityArgs ? { capabilityArgs } : {}),
  };
  return report(async () => {
    if (sub === 'add') printJson(await addNetworkList(list, opts));
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
    warn(`weft: ${e.message}${e.details ? ` (${e.details})` : ''} [CNI code ${e.code}]`);
    return 1;
  }
}
