/**
 * Bad input (issue 2, "Bad input"): each gets the spec's error JSON on stdout with the right code, a
 * non-zero exit, and leaves nothing behind: no link or address in the host, no nftables change, no
 * reservation file, nothing in the pod. Every case runs on the direct path and on the served path.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CniLab, expectError, iface, parseResult, reservations, type PluginRun } from './cni-support.js';

let lab: CniLab;
let served: string;
let nosock: string;

before(async () => {
  lab = await CniLab.create();
  served = await lab.serve();
  nosock = join(lab.dir, 'nothing-listens.sock');
});
after(() => lab?.destroy());

const NET = 'badnet';

for (const mode of ['direct', 'served'] as const) {
  describe(`bad input, ${mode} path`, () => {
    let pod: { name: string; path: string };
    const socket = () => (mode === 'served' ? served : nosock);
    const conf = (o: Record<string, unknown> = {}) => ({
      cniVersion: '1.0.0',
      name: NET,
      type: 'weft',
      socket: socket(),
      bridge: `br-${mode}`,
      isGateway: true,
      ipMasq: true,
      ipam: { type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[{ subnet: mode === 'direct' ? '10.20.1.0/24' : '10.20.2.0/24' }]] },
      ...o,
    });
    const env = (o: Record<string, string | undefined> = {}): Record<string, string> => {
      const e: Record<string, string | undefined> = {
        PATH: process.env.PATH,
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: `bad-${mode}`,
        CNI_NETNS: pod.path,
        CNI_IFNAME: 'eth0',
        CNI_PATH: lab.cniPath,
        ...o,
      };
      return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as Record<string, string>;
    };

    before(async () => {
      pod = await lab.pod(`bad-${mode}`);
    });

    /** Runs `call`, checks the error, and checks nothing changed in the host, the pod or the IPAM state. */
    async function unchanged(call: () => Promise<PluginRun>, code: number, msg?: RegExp, podPath = pod.path): Promise<void> {
      const host = await lab.hostState();
      const podState = async () =>
        (await lab.podAddrs(podPath)).map(
          (l) =>
            `${l.ifname} ${l.address} ${l.addr_info
              .filter((a) => !a.local.startsWith('fe80:'))
              .map((a) => a.local)
              .join(',')}`,
        );
      const podLinks = await podState();
      const held = reservations(join(lab.dataDir, NET));
      const before = mode === 'served' ? lab.serverLog.split('\n').length : 0;
      const r = await call();
      expectError(r, code, msg, `${mode}`);
      assert.deepEqual(await lab.hostState(), host, 'the host namespace is unchanged');
      assert.deepEqual(await podState(), podLinks, 'the pod namespace is unchanged');
      assert.deepEqual(reservations(join(lab.dataDir, NET)), held, 'no reservation was added or removed');
      if (mode === 'served' && code !== 6) assert.ok(lab.serverLog.split('\n').length > before, `the server handled it: ${lab.serverLog}`);
    }

    it('malformed JSON is code 6', async () => {
      const text = JSON.stringify(conf());
      await unchanged(() => lab.rawPlugin('weft', env(), text.slice(0, text.length - 10)), 6);
      await unchanged(() => lab.rawPlugin('weft', env(), '["not", "an", "object"]'), 6);
      await unchanged(() => lab.rawPlugin('weft', env(), ''), 6);
    });

    it('missing or bad CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME are code 4', async () => {
      const text = JSON.stringify(conf());
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_COMMAND: undefined }), text), 4, /CNI_COMMAND/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_COMMAND: 'ATTACH' }), text), 4, /CNI_COMMAND/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_CONTAINERID: undefined }), text), 4, /CNI_CONTAINERID/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_CONTAINERID: '../../etc' }), text), 4, /CNI_CONTAINERID/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_IFNAME: undefined }), text), 4, /CNI_IFNAME/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_IFNAME: 'eth/0' }), text), 4, /CNI_IFNAME/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_IFNAME: '..' }), text), 4, /CNI_IFNAME/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_NETNS: undefined }), text), 4, /CNI_NETNS/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_PATH: undefined }), text), 4, /CNI_PATH/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_COMMAND: 'DEL', CNI_IFNAME: 'x'.repeat(16) }), text), 4, /CNI_IFNAME/);
    });

    it('an overlong ifname is code 4', async () => {
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_IFNAME: 'averylongifname0' }), JSON.stringify(conf())), 4, /CNI_IFNAME.*15/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_IFNAME: 'ééééééééé' }), JSON.stringify(conf())), 4, /CNI_IFNAME/);
    });

    it('an unknown cniVersion is code 1', async () => {
      await unchanged(() => lab.rawPlugin('weft', env(), JSON.stringify(conf({ cniVersion: '0.2.0' }))), 1, /0\.2\.0/);
      await unchanged(() => lab.rawPlugin('weft', env(), JSON.stringify(conf({ cniVersion: '2.0.0' }))), 1);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_COMMAND: 'CHECK' }), JSON.stringify(conf({ cniVersion: '0.3.1', prevResult: {} }))), 1);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_COMMAND: 'GC' }), JSON.stringify(conf({ cniVersion: '1.0.0' }))), 1);
    });

    it('a bad CIDR in ipam is code 7', async () => {
      const ipam = (range: Record<string, unknown>) => ({ type: 'weft-ipam', dataDir: lab.dataDir, ranges: [[range]] });
      await unchanged(() => lab.rawPlugin('weft', env(), JSON.stringify(conf({ ipam: ipam({ subnet: '10.20.0.0/33' }) }))), 7, /subnet/);
      await unchanged(() => lab.rawPlugin('weft', env(), JSON.stringify(conf({ ipam: ipam({ subnet: '10.20.300.0/24' }) }))), 7, /subnet/);
      await unchanged(
        () => lab.rawPlugin('weft', env(), JSON.stringify(conf({ ipam: ipam({ subnet: '10.20.0.0/24', rangeStart: '10.21.0.5' }) }))),
        7,
        /rangeStart/,
      );
      await unchanged(() => lab.rawPlugin('weft-ipam', env(), JSON.stringify(conf({ ipam: ipam({ subnet: 'ten/8' }) }))), 7, /subnet/);
    });

    it('an ipam type that is not on CNI_PATH is code 7', async () => {
      await unchanged(() => lab.rawPlugin('weft', env(), JSON.stringify(conf({ ipam: { type: 'no-such-ipam' } }))), 7, /no-such-ipam/);
      await unchanged(
        () =>
          lab.rawPlugin(
            'weft',
            env({ CNI_PATH: lab.binDir }),
            JSON.stringify(conf({ ipam: { type: 'host-local', dataDir: lab.dataDir, subnet: '10.20.9.0/24' } })),
          ),
        7,
        /host-local/,
      );
    });

    it('a netns path that does not exist is code 3', async () => {
      const missing = join('/run/netns', `${lab.topo.id}-never-made`);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_NETNS: missing }), JSON.stringify(conf())), 3, /does not exist/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_NETNS: join(lab.dir, 'no-file') }), JSON.stringify(conf())), 3);
    });

    it('ADD on an ifname that already exists is code 100, and leaves the existing one alone', async () => {
      const first = await lab.rawPlugin('weft', env({ CNI_CONTAINERID: `first-${mode}` }), JSON.stringify(conf()));
      assert.equal(first.code, 0, first.stdout);
      const result = parseResult(first.json);
      const ip = result.ips[0]!.address;
      const mac = iface(result, 2).mac;
      const file = join(lab.dataDir, NET, ip.split('/')[0]!);
      assert.equal(reservations(join(lab.dataDir, NET)).get(ip.split('/')[0]!), `first-${mode}\r\neth0`);
      const nftBefore = await lab.nftRuleset();
      assert.ok(nftBefore.includes(ip.split('/')[0]!), 'ipMasq put the pod in the masquerade set');

      // The same attachment again, and another container on the same namespace and ifname.
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_CONTAINERID: `first-${mode}` }), JSON.stringify(conf())), 100, /already/);
      await unchanged(() => lab.rawPlugin('weft', env({ CNI_CONTAINERID: `second-${mode}` }), JSON.stringify(conf())), 100, /eth0 already exists/);

      const [eth0] = await lab.podAddrs(pod.path, 'eth0');
      assert.equal(eth0?.address, mac, 'the existing interface is the first one');
      assert.ok(
        eth0?.addr_info.some((a) => `${a.local}/${a.prefixlen}` === ip),
        'and keeps its address',
      );
      assert.equal(reservations(join(lab.dataDir, NET)).get(ip.split('/')[0]!), `first-${mode}\r\neth0`, `${file} still belongs to the first`);
      const check = await lab.rawPlugin(
        'weft',
        env({ CNI_COMMAND: 'CHECK', CNI_CONTAINERID: `first-${mode}` }),
        JSON.stringify(conf({ prevResult: first.json })),
      );
      assert.equal(check.code, 0, `the first attachment still passes CHECK: ${check.stdout}`);
    });

    it('ADD on an ifname some other tool made is code 100, and creates no bridge', async () => {
      const other = await lab.pod(`taken-${mode}`);
      const made = await lab.topo.exec(other.name, ['ip', 'link', 'add', 'eth0', 'type', 'bridge']);
      assert.equal(made.code, 0, made.stderr);
      await unchanged(
        () => lab.rawPlugin('weft', env({ CNI_CONTAINERID: `taken-${mode}`, CNI_NETNS: other.path }), JSON.stringify(conf({ bridge: `brnew-${mode}` }))),
        100,
        /eth0 already exists/,
        other.path,
      );
    });
  });
}
