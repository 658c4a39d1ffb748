import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { listNetns } from '../src/kernel/netns.js';
import { Topology } from '../src/topo/topology.js';

// The lab through the CLI when the user goes away: a closed stdout (`weft lab up | head -2`) stops the
// writing and nothing else; SIGINT removes what the run made and exits 130.
const WEFT = fileURLToPath(new URL('../../bin/weft', import.meta.url));
const weft = (...args: string[]) => spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: 120_000 });

let topo: Topology;
let lab: string;

before(async () => {
  topo = await Topology.create();
  lab = topo.id;
});

after(async () => {
  for (const name of [lab, `${lab}i`]) weft('lab', 'down', '--name', name);
  await topo.destroy();
  assert.deepEqual(
    listNetns().filter((n) => n.includes(lab)),
    [],
    'lab down left namespaces',
  );
});

/** Runs weft; each stdout line goes to `onLine` until it returns true, then the reader closes the pipe. */
async function watch(
  args: string[],
  onLine: (line: string, child: ChildProcess) => boolean,
): Promise<{ code: number | null; stderr: string; lines: string[] }> {
  const child = spawn(process.execPath, [WEFT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      if (onLine(line, child)) {
        child.stdout.destroy();
        return;
      }
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, stderr, lines };
}

test('lab up whose stdout closes after two lines finishes the lab and exits 0', async () => {
  let read = 0;
  const r = await watch(['lab', 'up', '--name', lab, '--nodes', '2', '--pods-per-node', '1'], () => ++read === 2);
  assert.match(r.lines[0]!, /^Creating lab/);
  assert.equal(r.lines.length, 2);
  assert.doesNotMatch(r.stderr, /EPIPE/);
  assert.equal(r.code, 0, r.stderr);

  const status = weft('lab', 'status', '--name', lab, '--json');
  assert.equal(status.status, 0, status.stderr);
  const s = JSON.parse(status.stdout) as { nodes: unknown[]; pods: unknown[] };
  assert.equal(s.nodes.length, 2, 'the lab was finished after the reader left');
  assert.equal(s.pods.length, 2);
});

test('lab up interrupted by SIGINT removes what it made and exits 130', async () => {
  const name = `${lab}i`;
  const r = await watch(['lab', 'up', '--name', name, '--nodes', '2', '--pods-per-node', '1'], (line, child) => {
    if (line.startsWith(' ✓')) child.kill('SIGINT');
    return false;
  });
  assert.equal(r.code, 130, r.stderr);
  assert.match(r.stderr, /SIGINT/);
  assert.ok(!r.lines.some((l) => /is ready/.test(l)), 'it stopped before the end');
  assert.deepEqual(
    listNetns().filter((n) => n.startsWith(`wl.${name}.`)),
    [],
    'namespaces left behind',
  );
  assert.ok(!existsSync(`/run/weft/lab/${name}/state.json`), 'a state file left behind');
});

test('lab apply, get and delete: usage errors exit 2, a missing lab exits 1, before anything runs', () => {
  const bad = weft('lab', 'get', 'nodes');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /lab get shows pods, services, endpoints, not "nodes"/);
  const format = weft('lab', 'get', 'pods', '-o', 'xml');
  assert.equal(format.status, 2);
  assert.match(format.stderr, /--output is json or yaml, not "xml"/);
  for (const cmd of ['apply', 'delete']) {
    const r = weft('lab', cmd);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`lab ${cmd} needs --filename FILE`));
  }
  const unreadable = weft('lab', 'apply', '-f', `/nonexistent/${lab}.yaml`);
  assert.equal(unreadable.status, 2);
  assert.match(unreadable.stderr, /cannot read \/nonexistent/);
  const noLab = weft('lab', 'get', 'services', '--name', `${lab}x`);
  assert.equal(noLab.status, 1);
  assert.match(noLab.stderr, /no lab named "\w+x" is running/);
  const help = weft('lab', '--help');
  assert.match(help.stdout, /weft lab apply --filename FILE/);
  assert.match(help.stdout, /weft lab get KIND/);
});
