import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pluginMain, type PluginFuncs } from './skel.js';
import { Code, CniError, LATEST, SUPPORTED_VERSIONS, type Command } from './spec.js';

/** Plugin functions that record which one ran; `fail` makes them throw it. */
function recorder(fail?: Error): { funcs: PluginFuncs; calls: string[] } {
  const calls: string[] = [];
  const step = (name: string) => () => {
    calls.push(name);
    return fail === undefined ? Promise.resolve() : Promise.reject(fail);
  };
  const funcs: PluginFuncs = {
    add: async (conf) => {
      await step('add')();
      return {
        cniVersion: conf.cniVersion,
        interfaces: [{ name: 'eth0', sandbox: '/run/netns/p' }],
        ips: [{ address: '10.1.0.2/24', gateway: '10.1.0.1', interface: 0 }],
      };
    },
    del: step('del'),
    check: step('check'),
    gc: step('gc'),
    status: step('status'),
  };
  return { funcs, calls };
}

const env = (command: Command) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/p', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' });
const conf = (cniVersion = '1.1.0') => JSON.stringify({ cniVersion, name: 'net', type: 'weft' });

describe('skel: pluginMain', () => {
  it('runs the function of each command, with an empty answer for all but ADD', async () => {
    for (const [command, fn] of [
      ['DEL', 'del'],
      ['CHECK', 'check'],
      ['GC', 'gc'],
      ['STATUS', 'status'],
    ] as const) {
      const { funcs, calls } = recorder();
      const res = await pluginMain(funcs, { env: env(command), stdin: conf() });
      assert.deepEqual(res, { exitCode: 0, stdout: '' }, command);
      assert.deepEqual(calls, [fn]);
    }
  });

  it('answers VERSION itself, without a config and without calling the plugin', async () => {
    const { funcs, calls } = recorder();
    const res = await pluginMain(funcs, { env: { CNI_COMMAND: 'VERSION' }, stdin: '' });
    assert.equal(res.exitCode, 0);
    assert.deepEqual(JSON.parse(res.stdout), { cniVersion: LATEST, supportedVersions: [...SUPPORTED_VERSIONS] });
    assert.deepEqual(calls, []);
  });

  it('encodes the ADD result in the version the config asks for', async () => {
    const old = await pluginMain(recorder().funcs, { env: env('ADD'), stdin: conf('0.3.1') });
    assert.equal(old.exitCode, 0);
    const r = JSON.parse(old.stdout) as { cniVersion: string; ips: { version?: string }[] };
    assert.equal(r.cniVersion, '0.3.1');
    assert.equal(r.ips[0]!.version, '4', '0.3.x results carry ips[].version');
    const now = JSON.parse((await pluginMain(recorder().funcs, { env: env('ADD'), stdin: conf('1.1.0') })).stdout) as { ips: { version?: string }[] };
    assert.equal(now.ips[0]!.version, undefined);
  });

  it("turns failures into the error JSON in the config's version: a CniError keeps its code, anything else is code 5", async () => {
    const coded = await pluginMain(recorder(new CniError(Code.RangeFull, 'range is full', 'free an address')).funcs, { env: env('ADD'), stdin: conf('1.0.0') });
    assert.equal(coded.exitCode, 1);
    assert.deepEqual(JSON.parse(coded.stdout), { cniVersion: '1.0.0', code: Code.RangeFull, msg: 'range is full', details: 'free an address' });
    const plain = await pluginMain(recorder(new Error('boom')).funcs, { env: env('DEL'), stdin: conf() });
    assert.deepEqual(JSON.parse(plain.stdout), { cniVersion: '1.1.0', code: Code.IO, msg: 'boom' });
  });

  it('refuses a bad environment (code 4) and a bad config (code 6) before calling the plugin', async () => {
    const { funcs, calls } = recorder();
    const noCmd = await pluginMain(funcs, { env: {}, stdin: conf() });
    assert.equal((JSON.parse(noCmd.stdout) as { code: number }).code, Code.InvalidEnv);
    const badJson = await pluginMain(funcs, { env: env('ADD'), stdin: '{' });
    assert.equal((JSON.parse(badJson.stdout) as { code: number }).code, Code.Decode);
    assert.deepEqual(calls, []);
  });
});
