import { isIP } from 'node:net';
import { validateLabName } from '../lab/state.js';
import { JSON_OPTION, type CommandSpec } from './command.js';
import { print, printJson, warn } from './output.js';
import { UsageError } from './usage.js';

/** `weft ui`: the lab drawn live in a browser (src/ui). */
function parseListen(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[\d.]+):(\d{1,5})$/.exec(text);
  const host = m?.[1]?.replace(/^\[|\]$/g, '');
  if (!m || !host || !isIP(host) || Number(m[2]) > 65535)
    throw new Error(`--listen takes IP:PORT (e.g. 127.0.0.1:7070, [::1]:7070; port 0 picks a free one), not "${text}"`);
  return { host, port: Number(m[2]) };
}

const loopback = (host: string) => host === '::1' || host.startsWith('127.');

export const uiCommands: CommandSpec[] = [
  {
    path: ['ui'],
    summary: 'the lab drawn live in a browser: nodes, pods, Services, traces, verify',
    details:
      "Serves a page until SIGINT/SIGTERM: the lab's nodes (public IP, pod subnet, bridge, tunnel device), pods, Services and tunnels, updated within a second when they change; click for routes and agent status; pick two endpoints to trace; run verify. The page can run traces and verify, which send traffic in the lab, so it listens on loopback unless --public is given.",
    options: [
      { name: 'name', value: 'LAB', default: 'weft', check: validateLabName, description: 'which lab' },
      { name: 'listen', value: 'IP:PORT', default: '127.0.0.1:7070', check: (v) => void parseListen(v), brief: true, description: 'where the page is served' },
      { name: 'public', description: 'allow a --listen address other than loopback (anyone who reaches it can run traces and verify)' },
      JSON_OPTION,
    ],
    run: async (a) => {
      const { host, port } = parseListen(a.str('listen')!);
      if (!loopback(host) && !a.bool('public'))
        throw new UsageError(`--listen ${a.str('listen')} is not a loopback address; the page runs traces and verify, so add --public to serve it there`);
      const { serveUi } = await import('../ui/server.js');
      const lab = a.str('name')!;
      const ui = await serveUi(lab, host, port);
      if (a.bool('json')) printJson({ lab, url: ui.url });
      else print(`weft ui: lab "${lab}" at ${ui.url} (Ctrl-C stops it)`);
      const sig = await new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      await ui.close();
      warn(`weft ui: stopped on ${sig}`);
      return 0;
    },
  },
];
