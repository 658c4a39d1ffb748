import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CniError, Code, decodeResult, encodeResult, parseEnv, parseNetConf, SUPPORTED_VERSIONS, validAttachments, type Result } from './spec.js';

/** Asserts that `fn` throws a CniError with `code`, and returns it. */
function throwsCode(fn: () => unknown, code: number, what = ''): CniError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof CniError, `${what}: expected a CniError with code ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, `${what}: ${caught.message}`);
  assert.ok(caught.message.length > 0);
  return caught;
}

const ADD = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/pod', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin:/usr/lib/cni' };

describe('spec: parseEnv', () => {
  it('reads a complete ADD environment', () => {
    const env = parseEnv({ ...ADD, CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=web-0;X=a=b' });
    assert.equal(env.command, 'ADD');
    assert.equal(env.containerId, 'c1');
    assert.equal(env.netns, '/run/netns/pod');
    assert.equal(env.ifname, 'eth0');
    assert.deepEqual(env.path, ['/opt/cni/bin', '/usr/lib/cni']);
    assert.deepEqual(
      [...env.args],
      [
        ['IgnoreUnknown', '1'],
        ['K8S_POD_NAME', 'web-0'],
        ['X', 'a=b'],
      ],
    );
  });

  it('needs a known CNI_COMMAND (code 4)', () => {
    throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: undefined }), Code.InvalidEnv, 'missing');
    throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: '' }), Code.InvalidEnv, 'empty');
    throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: 'add' }), Code.InvalidEnv, 'lower case');
    throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: 'DELETE' }), Code.InvalidEnv, 'unknown');
  });

  it('needs a valid CNI_CONTAINERID for ADD, DEL and CHECK (code 4)', () => {
    for (const command of ['ADD', 'DEL', 'CHECK']) {
      throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: command, CNI_CONTAINERID: undefined }), Code.InvalidEnv, `${command} missing`);
      throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: command, CNI_CONTAINERID: '' }), Code.InvalidEnv, `${command} empty`);
    }
    for (const bad of ['../etc', '-abc', 'a b', 'a/b', '_x', 'x;y']) {
      throwsCode(() => parseEnv({ ...ADD, CNI_CONTAINERID: bad }), Code.InvalidEnv, bad);
    }
    assert.equal(parseEnv({ ...ADD, CNI_CONTAINERID: 'Abc_1.2-3' }).containerId, 'Abc_1.2-3');
  });

  it('validates CNI_IFNAME: 1-15 characters, not . or .., no / : or whitespace (code 4)', () => {
    throwsCode(() => parseEnv({ ...ADD, CNI_IFNAME: undefined }), Code.InvalidEnv, 'missing');
    throwsCode(() => parseEnv({ ...ADD, CNI_IFNAME: '' }), Code.InvalidEnv, 'empty');
    const long = throwsCode(() => parseEnv({ ...ADD, CNI_IFNAME: 'a'.repeat(16) }), Code.InvalidEnv, '16 characters');
    assert.match(long.message, /15/);
    assert.equal(parseEnv({ ...ADD, CNI_IFNAME: 'a'.repeat(15) }).ifname, 'a'.repeat(15));
    for (const bad of ['.', '..', 'eth/0', 'eth:0', 'eth 0', 'eth\t0', 'eth0\n']) {
      throwsCode(() => parseEnv({ ...ADD, CNI_IFNAME: bad }), Code.InvalidEnv, JSON.stringify(bad));
    }
    for (const good of ['net1', 'eth0.100', '...', 'a', 'é', 'é'.repeat(7)]) assert.equal(parseEnv({ ...ADD, CNI_IFNAME: good }).ifname, good);
    // The kernel's limit is 15 bytes, as libcni counts (Go's len), not 15 UTF-16 units.
    throwsCode(() => parseEnv({ ...ADD, CNI_IFNAME: 'é'.repeat(8) }), Code.InvalidEnv, '8 two-byte characters');
    throwsCode(() => parseEnv({ ...ADD, CNI_IFNAME: 'eth\u00850' }), Code.InvalidEnv, 'NEL is whitespace to Go');
    // DEL validates it too: it names what to delete.
    throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: 'DEL', CNI_IFNAME: 'x'.repeat(16) }), Code.InvalidEnv, 'DEL');
  });

  it('needs CNI_NETNS for ADD and CHECK, not for DEL', () => {
    throwsCode(() => parseEnv({ ...ADD, CNI_NETNS: undefined }), Code.InvalidEnv, 'ADD');
    throwsCode(() => parseEnv({ ...ADD, CNI_COMMAND: 'CHECK', CNI_NETNS: '' }), Code.InvalidEnv, 'CHECK');
    assert.equal(parseEnv({ ...ADD, CNI_COMMAND: 'DEL', CNI_NETNS: undefined }).netns, '');
  });

  it('needs CNI_PATH except for VERSION and STATUS; GC needs no container', () => {
    throwsCode(() => parseEnv({ ...ADD, CNI_PATH: undefined }), Code.InvalidEnv, 'ADD');
    throwsCode(() => parseEnv({ CNI_COMMAND: 'GC' }), Code.InvalidEnv, 'GC');
    assert.equal(parseEnv({ CNI_COMMAND: 'GC', CNI_PATH: '/usr/lib/cni' }).command, 'GC');
    assert.equal(parseEnv({ CNI_COMMAND: 'VERSION' }).command, 'VERSION');
    assert.equal(parseEnv({ CNI_COMMAND: 'STATUS' }).command, 'STATUS');
    assert.deepEqual(parseEnv({ ...ADD, CNI_PATH: '' }).path, []);
    assert.deepEqual(parseEnv({ ...ADD, CNI_PATH: '/a::/b:' }).path, ['/a', '/b']);
  });

  it('rejects CNI_ARGS that are not KEY=VALUE pairs (code 4)', () => {
    throwsCode(() => parseEnv({ ...ADD, CNI_ARGS: 'K8S_POD_NAME' }), Code.InvalidEnv, 'no =');
    throwsCode(() => parseEnv({ ...ADD, CNI_ARGS: '=x' }), Code.InvalidEnv, 'no key');
    assert.equal(parseEnv({ ...ADD, CNI_ARGS: ';A=1;;' }).args.get('A'), '1');
  });
});

describe('spec: parseNetConf', () => {
  const conf = (o: Record<string, unknown>) => JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'weft', ...o });

  it('accepts every supported version and keeps unknown fields', () => {
    for (const v of SUPPORTED_VERSIONS) {
      const c = parseNetConf(conf({ cniVersion: v, whatever: { a: 1 } }), 'ADD');
      assert.equal(c.cniVersion, v);
      assert.deepEqual(c.whatever, { a: 1 });
    }
  });

  it('malformed JSON is code 6', () => {
    for (const bad of ['', '{', '{"cniVersion": "1.0.0",}', 'null', '[]', '"text"', '42']) {
      throwsCode(() => parseNetConf(bad, 'ADD'), Code.Decode, JSON.stringify(bad));
    }
  });

  it('an unknown version is code 1, matched exactly', () => {
    for (const v of ['0.1.0', '0.2.0', '1.2.0', '2.0.0', '1.0', '1.1', 'v1.0.0', ' 1.0.0']) {
      const e = throwsCode(() => parseNetConf(conf({ cniVersion: v }), 'ADD'), Code.IncompatibleVersion, v);
      assert.match(e.details, /1\.1\.0/, 'the error lists the supported versions');
    }
  });

  it('a missing version or a bad network name or ipam is code 7', () => {
    throwsCode(() => parseNetConf(JSON.stringify({ name: 'pods', type: 'weft' }), 'ADD'), Code.InvalidConfig, 'no version');
    throwsCode(() => parseNetConf(conf({ name: undefined }), 'ADD'), Code.InvalidConfig, 'no name');
    for (const bad of ['', '-pods', 'po ds', 'pods/x', 7]) throwsCode(() => parseNetConf(conf({ name: bad }), 'ADD'), Code.InvalidConfig, String(bad));
    for (const bad of ['host-local', [], null, 3]) throwsCode(() => parseNetConf(conf({ ipam: bad }), 'ADD'), Code.InvalidConfig, JSON.stringify(bad));
  });

  it('CHECK needs 0.4.0 or later; GC and STATUS need 1.1.0 (code 1)', () => {
    for (const v of ['0.3.0', '0.3.1']) throwsCode(() => parseNetConf(conf({ cniVersion: v }), 'CHECK'), Code.IncompatibleVersion, `CHECK ${v}`);
    for (const v of ['0.4.0', '1.0.0', '1.1.0']) assert.equal(parseNetConf(conf({ cniVersion: v }), 'CHECK').cniVersion, v);
    for (const cmd of ['GC', 'STATUS'] as const) {
      for (const v of ['0.3.1', '0.4.0', '1.0.0']) throwsCode(() => parseNetConf(conf({ cniVersion: v }), cmd), Code.IncompatibleVersion, `${cmd} ${v}`);
      assert.equal(parseNetConf(conf({ cniVersion: '1.1.0' }), cmd).cniVersion, '1.1.0');
    }
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) assert.equal(parseNetConf(conf({ cniVersion: v }), 'DEL').cniVersion, v);
  });
});

describe('spec: results', () => {
  const result: Result = {
    cniVersion: '1.1.0',
    interfaces: [
      { name: 'cni0', mac: '02:00:00:00:00:01' },
      { name: 'veth0123abcd', mac: '02:00:00:00:00:02' },
      { name: 'eth0', mac: '02:00:00:00:00:03', mtu: 1450, sandbox: '/run/netns/pod' },
    ],
    ips: [
      { address: '10.244.7.2/24', gateway: '10.244.7.1', interface: 2 },
      { address: 'fd00:7::2/64', gateway: 'fd00:7::1', interface: 2 },
    ],
    routes: [{ dst: '10.244.0.0/16', gw: '10.244.7.1', mtu: 1400, priority: 10 }, { dst: '0.0.0.0/0' }],
    dns: { nameservers: ['10.96.0.10'] },
  };

  it('0.3.0, 0.3.1 and 0.4.0 carry ips[].version and the old route and interface fields', () => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0']) {
      const out = encodeResult(result, v) as Record<string, unknown>;
      assert.deepEqual(out, {
        cniVersion: v,
        interfaces: [
          { name: 'cni0', mac: '02:00:00:00:00:01' },
          { name: 'veth0123abcd', mac: '02:00:00:00:00:02' },
          { name: 'eth0', mac: '02:00:00:00:00:03', sandbox: '/run/netns/pod' },
        ],
        ips: [
          { version: '4', address: '10.244.7.2/24', gateway: '10.244.7.1', interface: 2 },
          { version: '6', address: 'fd00:7::2/64', gateway: 'fd00:7::1', interface: 2 },
        ],
        routes: [{ dst: '10.244.0.0/16', gw: '10.244.7.1' }, { dst: '0.0.0.0/0' }],
        dns: { nameservers: ['10.96.0.10'] },
      });
    }
  });

  it('1.0.0 drops ips[].version and has no route or interface mtu', () => {
    assert.deepEqual(encodeResult(result, '1.0.0'), {
      cniVersion: '1.0.0',
      interfaces: [
        { name: 'cni0', mac: '02:00:00:00:00:01' },
        { name: 'veth0123abcd', mac: '02:00:00:00:00:02' },
        { name: 'eth0', mac: '02:00:00:00:00:03', sandbox: '/run/netns/pod' },
      ],
      ips: result.ips,
      routes: [{ dst: '10.244.0.0/16', gw: '10.244.7.1' }, { dst: '0.0.0.0/0' }],
      dns: { nameservers: ['10.96.0.10'] },
    });
  });

  it('1.1.0 keeps everything', () => {
    assert.deepEqual(encodeResult(result, '1.1.0'), { ...result, cniVersion: '1.1.0' });
  });

  it('an IPAM result has no interfaces, and always an ips list', () => {
    const out = encodeResult({ cniVersion: '1.1.0', ips: [{ address: '10.1.0.2/24' }] }, '0.4.0') as Record<string, unknown>;
    assert.equal(out.interfaces, undefined);
    assert.deepEqual(out.ips, [{ version: '4', address: '10.1.0.2/24' }]);
    assert.deepEqual((encodeResult({ cniVersion: '1.1.0' }, '1.0.0') as Record<string, unknown>).ips, []);
  });

  it('decodeResult reads every version back into the current shape', () => {
    for (const v of SUPPORTED_VERSIONS) {
      const back = decodeResult(JSON.parse(JSON.stringify(encodeResult(result, v))));
      assert.equal(back.cniVersion, v);
      assert.deepEqual(back.ips, result.ips, `${v}: ips[].version is dropped`);
      assert.equal(back.interfaces?.length, 3);
      assert.equal(back.routes?.[0]?.dst, '10.244.0.0/16');
      assert.deepEqual(back.dns, result.dns);
    }
    assert.deepEqual(decodeResult(undefined), { cniVersion: '1.1.0' });
    assert.deepEqual(decodeResult(null), { cniVersion: '1.1.0' });
    throwsCode(() => decodeResult('text'), Code.Decode, 'string');
    throwsCode(() => decodeResult([]), Code.Decode, 'array');
  });

  it('validAttachments reads the new key and the older one', () => {
    const base = { cniVersion: '1.1.0', name: 'pods', type: 'weft' };
    const list = [{ containerID: 'a', ifname: 'eth0' }];
    assert.deepEqual(validAttachments({ ...base, 'cni.dev/valid-attachments': list }), list);
    assert.deepEqual(validAttachments({ ...base, 'cni.dev/attachments': list }), list);
    assert.deepEqual(validAttachments(base), []);
    throwsCode(() => validAttachments({ ...base, 'cni.dev/valid-attachments': 'a' }), Code.InvalidConfig, 'not a list');
  });

  it('errors print the spec error JSON', () => {
    const e = new CniError(Code.InvalidEnv, 'CNI_IFNAME is bad', 'fix it');
    assert.deepEqual(JSON.parse(JSON.stringify(e.toJSON('0.4.0'))), { cniVersion: '0.4.0', code: 4, msg: 'CNI_IFNAME is bad', details: 'fix it' });
    assert.deepEqual(JSON.parse(JSON.stringify(new CniError(7, 'bad').toJSON('1.1.0'))), { cniVersion: '1.1.0', code: 7, msg: 'bad' });
  });
});
