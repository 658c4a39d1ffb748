import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { COMMANDS, GROUPS } from '../src/cli/commands.js';

// The CLI as a user meets it: help, usage errors, exit codes. Nothing here needs root or a namespace.
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WEFT = join(ROOT, 'bin', 'weft');
const weft = (...args: string[]) => spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('weft CLI: help for every command in the table', () => {
  for (const c of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      it(`weft ${c.path.join(' ')} ${flag} prints its usage with every option`, () => {
        const r = weft(...c.path, flag);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stderr, '');
        assert.match(r.stdout, new RegExp(`^Usage: weft ${c.path.join(' ')}\\b`, 'm'));
        for (const o of c.options) {
          assert.ok(r.stdout.includes(`--${o.name}${o.value ? ` ${o.value}` : ''}`), `--${o.name} missing from the help of ${c.path.join(' ')}`);
          if (o.short) assert.ok(r.stdout.includes(`-${o.short}, --${o.name}`));
          if (o.default !== undefined) assert.ok(r.stdout.includes(`default: ${o.default}`), `default of --${o.name}`);
        }
        assert.match(r.stdout, /-h, --help/);
      });
    }
  }

  it('the top-level usage lists every command, each line starting with "  weft <words>"', () => {
    const r = weft('--help');
    assert.equal(r.status, 0);
    // The same reading as the before-stop hook's sed/awk pipeline: words up to the first option or argument.
    const listed = new Set(
      r.stdout.split('\n').flatMap((l) => {
        const words =
          /^ *weft ([a-z][a-z -]*[a-z])/
            .exec(l)?.[1]
            ?.replace(/ {2}.*/, '')
            .split(' ') ?? [];
        const end = words.findIndex((w) => !/^[a-z][a-z-]*$/.test(w));
        return words.length ? [words.slice(0, end < 0 ? undefined : end).join(' ')] : [];
      }),
    );
    for (const c of COMMANDS) assert.ok(listed.has(c.path.join(' ')), `weft --help does not list "${c.path.join(' ')}"`);
    assert.match(r.stdout, /weft agent --cleanup/);
    assert.match(r.stdout, /weft bench cni \[--quick\]/);
    assert.equal(weft('-h').stdout, r.stdout);
    assert.equal(weft('help', 'lab', 'up').stdout, weft('lab', 'up', '--help').stdout);
  });

  for (const g of GROUPS) {
    it(`weft ${g.path.join(' ')} --help lists its commands; without a command it is a usage error`, () => {
      const r = weft(...g.path, '--help');
      assert.equal(r.status, 0);
      for (const c of COMMANDS.filter((x) => g.path.every((w, i) => x.path[i] === w))) assert.ok(r.stdout.includes(`weft ${c.path.join(' ')}`));
      const bare = weft(...g.path);
      assert.equal(bare.status, 2);
      assert.equal(bare.stdout, '');
      assert.match(bare.stderr, new RegExp(`needs a command[^]*weft ${g.path.join(' ')}: `));
    });
  }
});

describe("weft CLI: usage errors exit 2 with that command's usage, before any work", () => {
  for (const c of COMMANDS) {
    it(`weft ${c.path.join(' ')} --no-such-option`, () => {
      const r = weft(...c.path, '--no-such-option');
      assert.equal(r.status, 2);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^weft: Unknown option '--no-such-option'/);
      assert.match(r.stderr, new RegExp(`\\nUsage: weft ${c.path.join(' ')}\\b`));
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
  }

  it('bad values are refused before anything is created or printed', () => {
    const cases: [string[], RegExp][] = [
      [['lab', 'up', '--nodes', 'abc'], /--nodes takes a whole number from 1 to 200, not "abc"/],
      [['lab', 'up', '--nodes', '0'], /--nodes takes a whole number/],
      [['lab', 'up', '--backend', 'wireguard'], /--backend is vxlan, host-gw or udp, not "wireguard"/],
      [['lab', 'up', '--name', '../x'], /lab name "\.\.\/x" is invalid/],
      [['lab', 'status', '--name', 'A B'], /lab name "A B" is invalid/],
      [['bench', 'datapath', '--backends', 'vxlan,bogus'], /--backends is a comma-separated list of vxlan, host-gw, udp, not "bogus"/],
      [['bench', 'cni', '--pods', '0'], /--pods takes a whole number from 1 to 500, not "0"/],
      [['bench', 'cni', '--pods', '-3'], /--pods' argument is ambiguous/],
      [
        ['agent', '--node', 'n1', '--state-dir', '/tmp', '--etcd-endpoints', 'http://127.0.0.1:1', '--log-level', 'loud'],
        /--log-level is debug, info, warn or error/,
      ],
      [['agent', '--node', 'n1', '--state-dir', '/tmp', '--etcd-endpoints', 'http://127.0.0.1:1', '--resync', '0'], /--resync takes a number, at least 0.1/],
      [['lab', 'pod', 'add', 'web'], /lab pod add needs --node NODE/],
      [['lab', 'pod', 'add', 'A B', '--node', 'node1'], /pod name "A B" is invalid/],
      [['lab', 'node', 'add', '../../x'], /node name "\.\.\/\.\.\/x" is invalid/],
      [['lab', 'pod', 'rm'], /lab pod rm needs NAME/],
      [['agent', '--node', 'n1', '--state-dir', '/tmp', '--etcd-endpoints', '127.0.0.1:2379'], /"127\.0\.0\.1:2379" is not an http:\/\/ or https:\/\/ URL/],
      [
        ['agent', '--node', 'n1', '--state-dir', '/tmp', '--etcd-endpoints', 'http://127.0.0.1:1', '--public-ip', '10.0.0'],
        /--public-ip takes an IPv4 address, not "10\.0\.0"/,
      ],
      [['network', 'init', '--config', '{}', '--etcd-endpoints', ','], /--etcd-endpoints needs at least one URL/],
      [['lab', 'exec', 'node1'], /lab exec needs COMMAND after --/],
      [['cni', 'add', '--conf', '/nonexistent'], /cni add needs NETNS/],
      [['cni', 'install'], /cni install needs --bin-dir DIR/],
      [['verify', 'extra'], /unexpected argument "extra" for verify/],
    ];
    for (const [args, message] of cases) {
      const r = weft(...args);
      assert.equal(r.status, 2, args.join(' '));
      assert.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout (no "Creating lab")`);
      assert.match(r.stderr, message, args.join(' '));
      assert.match(r.stderr, /\nUsage: weft /, args.join(' '));
    }
  });

  it('an unknown command prints the whole list; an unknown subcommand its group', () => {
    const r = weft('frobnicate');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown command "frobnicate"[^]*weft lab up/);
    const s = weft('lab', 'frobnicate', '--help');
    assert.equal(s.status, 0, 'help wins over the unknown word');
    const t = weft('bench', 'frobnicate');
    assert.equal(t.status, 2);
    assert.match(t.stderr, /unknown bench command "frobnicate"/);
    assert.match(t.stderr, /weft bench datapath/);
    assert.doesNotMatch(t.stderr, /weft lab up/, 'only the group, not the whole list');
    const bare = weft();
    assert.equal(bare.status, 2);
    assert.match(bare.stderr, /Usage:/);
  });

  it("weft --version prints package.json's version", () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = weft('--version');
    assert.equal(r.status, 0);
    assert.equal(r.stdout, `${version}\n`);
  });

  it('a failure exits 1 and --json keeps stdout for JSON only', () => {
    const r = weft('agent', 'status', '--state-dir', '/nonexistent-weft-state', '--json');
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /no agent answers/);
    const s = weft('lab', 'status', '--name', 'nosuchlab', '--json');
    assert.equal(s.status, 1);
    assert.equal(s.stdout, '');
    assert.match(s.stderr, /no lab named "nosuchlab"/);
  });
});

describe('weft CLI: a closed stdout', () => {
  for (const args of [['--help'], ['lab', 'up', '--help'], ['lab', 'up', '--dry-run', '--name', 'nothing-made']]) {
    it(`weft ${args.join(' ')} with its reader gone exits 0 without an EPIPE crash`, async () => {
      const child = spawn(process.execPath, [WEFT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      // Closed before the child's Node has even started, so its first write meets a pipe with no reader.
      child.stdout.destroy();
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(stderr, '');
      assert.equal(code, 0);
    });
  }
});
