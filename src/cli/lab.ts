import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { table } from '../bench/report.js';
import { addNode, addPod, down, readState, removeNode, removePod, up, validateLabName, type Backend, type LabState } from '../lab/lab.js';
import { formatVerify, verify } from '../lab/verify.js';
import { UsageError } from './usage.js';

const nameOption = { name: { type: 'string', default: 'weft' } } as const;

function summary(s: LabState): string {
  return [
    table(['node', 'public IP', 'pod subnet', 'mode'], s.nodes.map((n) => [n.name, n.ip, n.subnet ?? '?', s.backend])),
    '',
    table(['pod', 'node', 'IP', 'containers'], s.pods.map((p) => [p.name, p.node, p.ip, p.containers.join('+')])),
  ].join('\n');
}

function nextSteps(s: LabState): string {
  const flag = s.name === 'weft' ? '' : ` --name ${s.name}`;
  const [a, b] = [s.pods[0], s.pods.find((p) => p.node !== s.pods[0]?.node) ?? s.pods[1]];
  return [
    'Next:',
    `  weft verify${flag}                          check the Kubernetes network model`,
    ...(a && b ? [`  weft lab exec${flag} ${a.name} -- ping -c 3 ${b.name}    names resolve to IPs`] : []),
    `  weft lab exec${flag} ${s.nodes[0]?.name ?? 'node1'} -- ip route            a node's routes`,
    `  weft lab status${flag}                      this table again`,
    `  weft lab down${flag}                        remove everything`,
  ].join('\n');
}

function count(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag} takes a whole number`);
  return n;
}

export async function labCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'up': {
      const { values } = parseArgs({ args: rest, options: { ...nameOption, nodes: { type: 'string' }, 'pods-per-node': { type: 'string' }, backend: { type: 'string', default: 'vxlan' }, mode: { type: 'string', default: 'overlay' } } });
      if (!['vxlan', 'host-gw', 'udp'].includes(values.backend)) throw new UsageError('--backend is vxlan, host-gw or udp');
      if (values.mode !== 'overlay' && values.mode !== 'underlay') throw new UsageError('--mode is overlay (pods behind the agent\'s backend) or underlay (macvlan pods on the node network)');
      const started = performance.now();
      console.log(`Creating lab "${values.name}"`);
      const s = await up({
        name: values.name,
        nodes: count(values.nodes, '--nodes', 3),
        podsPerNode: count(values['pods-per-node'], '--pods-per-node', 2),
        backend: values.mode === 'underlay' ? 'macvlan' : (values.backend as Backend),
        progress: (step, ms) => console.log(` ✓ ${step} (${(ms / 1000).toFixed(1)} s)`),
      });
      console.log(`Lab "${s.name}" is ready in ${((performance.now() - started) / 1000).toFixed(1)} s\n\n${summary(s)}\n\n${nextSteps(s)}`);
      return 0;
    }
    case 'down': {
      const { values } = parseArgs({ args: rest, options: nameOption });
      const gone = await down(values.name);
      console.log(gone.length ? `removed lab "${values.name}" (${gone.length} namespaces)` : `no lab "${values.name}" was running; nothing to remove`);
      return 0;
    }
    case 'status': {
      const { values } = parseArgs({ args: rest, options: { ...nameOption, json: { type: 'boolean' } } });
      const s = readState(values.name);
      const etcd = s.backend === 'macvlan' ? '' : `, etcd ${s.etcd.endpoint}`;
      console.log(values.json ? JSON.stringify(s, null, 2) : `lab "${s.name}" (${s.backend})${etcd}, outside ${s.outside.ip}\n\n${summary(s)}`);
      return 0;
    }
    case 'exec': {
      const dash = rest.indexOf('--');
      if (dash < 0) throw new UsageError('lab exec needs: NODE|POD -- COMMAND');
      const { values, positionals } = parseArgs({ args: rest.slice(0, dash), allowPositionals: true, options: nameOption });
      const s = readState(values.name);
      const target = positionals[0];
      const where = s.nodes.find((n) => n.name === target) ?? s.pods.find((p) => p.name === target);
      if (!where || positionals.length !== 1) throw new UsageError(`lab exec needs one node or pod name; this lab has ${[...s.nodes, ...s.pods].map((x) => x.name).join(', ')}`);
      // Names of pods and nodes in the command become their IPs, as in Mininet.
      const ips = new Map<string, string>([...s.nodes.map((n) => [n.name, n.ip] as const), ...s.pods.map((p) => [p.name, p.ip] as const)]);
      const cmd = rest.slice(dash + 1).map((a) => ips.get(a) ?? a);
      if (cmd.length === 0) throw new UsageError('lab exec needs a command after --');
      const r = spawnSync('ip', ['netns', 'exec', where.ns, ...cmd], { stdio: 'inherit' });
      return r.status ?? 1;
    }
    case 'pod':
    case 'node': {
      const [action, ...more] = rest;
      const { values, positionals } = parseArgs({ args: more, allowPositionals: true, options: { ...nameOption, node: { type: 'string' } } });
      const s = readState(values.name);
      const target = positionals[0];
      if (sub === 'pod' && action === 'add') {
        if (!target || !values.node) throw new UsageError('lab pod add needs NAME --node NODE');
        const p = await addPod(s, target, values.node);
        console.log(`pod ${p.name} is up on ${p.node} with IP ${p.ip}`);
      } else if (sub === 'pod' && action === 'rm') {
        if (!target) throw new UsageError('lab pod rm needs NAME');
        await removePod(s, target);
        console.log(`pod ${target} removed`);
      } else if (sub === 'node' && action === 'add') {
        const name = target ?? `node${Math.max(0, ...s.nodes.map((n) => Number(n.name.replace(/\D/g, '')) || 0)) + 1}`;
        const n = await addNode(s, name);
        console.log(`node ${n.name} joined at ${n.ip} with subnet ${n.subnet}`);
      } else if (sub === 'node' && action === 'rm') {
        if (!target) throw new UsageError('lab node rm needs NAME');
        await removeNode(s, target);
        console.log(`node ${target} removed`);
      } else {
        throw new UsageError(`lab ${sub} takes add or rm`);
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown lab command "${sub ?? ''}"`);
  }
}

export async function verifyCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...nameOption, json: { type: 'boolean' } } });
  validateLabName(values.name);
  const { state, results } = await verify(values.name);
  console.log(values.json ? JSON.stringify({ lab: state.name, passed: results.filter((r) => r.ok).length, failed: results.filter((r) => !r.ok).length, results }, null, 2) : formatVerify(state, results));
  return results.every((r) => r.ok) ? 0 : 1;
}
