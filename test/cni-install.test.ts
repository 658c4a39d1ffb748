/**
 * `weft cni install` makes plugins that need nothing of the checkout or package they came from: the
 * direct path (no server) still works after that is deleted and after the bin dir moves; and `npm
 * pack` gives a tarball that `npm install -g` installs and whose weft runs and installs plugins.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { collect } from '../src/util/proc.js';
import { CniLab, expectError, parseResult, reservations, ROOT } from './cni-support.js';

let lab: CniLab;

before(async () => {
  lab = await CniLab.create();
});
after(() => lab?.destroy());

/** Every file and symlink under `dir`, so the test can say none of them names `paths`. */
function refersTo(dir: string, paths: string[]): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isSymbolicLink()) {
      const target = readlinkSync(p);
      if (paths.some((x) => target.startsWith(x))) out.push(`${p} -> ${target}`);
    } else if (st.isDirectory()) {
      out.push(...refersTo(p, paths));
    } else if (!name.endsWith('.node')) {
      const text = readFileSync(p);
      for (const x of paths) if (text.includes(x)) out.push(`${p} names ${x}`);
    }
  }
  return out;
}

/** ADD, CHECK and DEL on the direct path (the config's socket has no server) with the plugin in `bin`. */
async function directRoundTrip(bin: string, net: string, subnet: string): Promise<void> {
  const pod = await lab.pod(net);
  const conf = {
    cniVersion: '1.1.0',
    name: net,
    type: 'weft',
    bridge: `br${net}`.slice(0, 15),
    isGateway: true,
    ipMasq: true,
    socket: join(lab.dir, 'nothing-listens.sock'),
    ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet }]] },
  };
  const call = (command: string) => ({ command, containerId: net, netns: pod.path, ifname: 'eth0' });
  const result = parseResult(await lab.ok(join(bin, 'weft'), call('ADD'), conf));
  assert.equal(result.ips[0]?.address, subnet.replace(/0\/24$/, '2/24'));
  assert.equal((await lab.podAddrs(pod.path, 'eth0'))[0]?.addr_info.find((a) => a.family === 'inet')?.local, subnet.replace(/0\/24$/, '2'));
  await lab.ok(join(bin, 'weft'), call('CHECK'), { ...conf, prevResult: result });
  await lab.ok(join(bin, 'weft'), call('DEL'), { ...conf, prevResult: result });
  assert.equal(reservations(join(lab.dataDir, net)).size, 0, 'DEL released the address');
  assert.deepEqual(await lab.podAddrs(pod.path).then((ls) => ls.map((l) => l.ifname)), ['lo'], 'DEL removed the pod interface');
}

const weftCli = (entry: string, args: string[]) => collect([process.execPath, entry, ...args], { timeoutMs: 120_000 });

describe('installed plugins stand on their own', () => {
  it('run ADD, CHECK and DEL on the direct path after the checkout they came from is deleted, and after their bin dir moves', async () => {
    const checkout = join(lab.dir, 'checkout');
    for (const p of ['bin', 'build', 'dist/src', 'package.json']) cpSync(join(ROOT, p), join(checkout, p), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(checkout, 'node_modules'));
    const bin = join(lab.dir, 'opt-cni-bin');
    const r = await weftCli(join(checkout, 'bin', 'weft'), ['cni', 'install', '--bin-dir', bin]);
    assert.equal(r.code, 0, r.stderr);
    rmSync(checkout, { recursive: true });
    assert.deepEqual(refersTo(bin, [ROOT, checkout]), [], 'nothing installed names the checkout');

    await directRoundTrip(bin, 'inst1', '10.41.1.0/24');
    const moved = join(lab.dir, 'elsewhere');
    renameSync(bin, moved);
    await directRoundTrip(moved, 'inst2', '10.41.2.0/24');
    // weft-ipam is the same front; it picks its role from its name.
    const v = (await lab.ok(join(moved, 'weft-ipam'), { command: 'VERSION' }, { cniVersion: '1.1.0' })) as { supportedVersions: string[] };
    assert.ok(v.supportedVersions.includes('1.1.0'));
  });

  it('fall back to the Node on PATH when the one that installed them is gone, and say what to do when the install is broken', async () => {
    const bin = join(lab.dir, 'fallback-bin');
    const r = await weftCli(join(ROOT, 'bin', 'weft'), ['cni', 'install', '--bin-dir', bin]);
    assert.equal(r.code, 0, r.stderr);
    rmSync(join(bin, 'weft-cni', 'node'));
    await directRoundTrip(bin, 'inst3', '10.41.3.0/24');

    rmSync(join(bin, 'weft-cni', 'cni.mjs'));
    const broken = await lab.plugin(
      join(bin, 'weft'),
      { command: 'ADD', containerId: 'inst4', netns: (await lab.pod('inst4')).path, ifname: 'eth0' },
      { cniVersion: '1.1.0', name: 'inst4', type: 'weft', socket: join(lab.dir, 'nothing-listens.sock') },
    );
    const e = expectError(broken, 5, /cni\.mjs/, 'ADD with the bundle missing');
    assert.match(e.details ?? '', /weft cni install/);
  });

  it('a reinstall replaces the runtime dir whole and leaves no staged copies behind', async () => {
    const bin = join(lab.dir, 'reinstall-bin');
    for (let i = 0; i < 2; i++) {
      const r = await weftCli(join(ROOT, 'bin', 'weft'), ['cni', 'install', '--bin-dir', bin]);
      assert.equal(r.code, 0, r.stderr);
    }
    const names = readdirSync(bin).sort();
    assert.equal(names.filter((n) => n.startsWith('.weft-cni-')).length, 1, `one runtime dir: ${names.join(' ')}`);
    assert.deepEqual(
      names.filter((n) => !n.startsWith('.')),
      ['weft', 'weft-cni', 'weft-ipam'],
    );
    assert.ok(existsSync(join(bin, 'weft-cni', 'node_modules', 'koffi', 'package.json')), 'koffi is installed beside the bundle');
  });
});

describe('npm pack', () => {
  it('gives a tarball that npm install -g installs; its weft runs --help and installs plugins that work once the package is gone', async () => {
    const dir = join(lab.dir, 'pack');
    mkdirSync(dir);
    const pack = await collect(['npm', 'pack', ROOT, '--pack-destination', dir, '--json', '--ignore-scripts'], { timeoutMs: 120_000 });
    assert.equal(pack.code, 0, pack.stderr);
    const [info] = JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[];
    const files = info!.files.map((f) => f.path);
    for (const f of ['bin/weft', 'build/weft-cni-front', 'build/weft-cni.mjs', 'dist/src/cli/main.js', 'dist/src/cni/install.js'])
      assert.ok(files.includes(f), `the tarball has ${f}`);
    assert.ok(!files.some((f) => f.startsWith('dist/test/') || f.endsWith('.test.js')), 'and no tests');

    const prefix = join(lab.dir, 'prefix');
    const inst = await collect(['npm', 'install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(dir, info!.filename)], {
      timeoutMs: 300_000,
    });
    assert.equal(inst.code, 0, `${inst.stdout}\n${inst.stderr}`);
    const help = await weftCli(join(prefix, 'bin', 'weft'), ['--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /cni/);

    const bin = join(lab.dir, 'from-package');
    const r = await weftCli(join(prefix, 'bin', 'weft'), ['cni', 'install', '--bin-dir', bin]);
    assert.equal(r.code, 0, r.stderr);
    rmSync(prefix, { recursive: true });
    await directRoundTrip(bin, 'inst5', '10.41.5.0/24');
  });
});
