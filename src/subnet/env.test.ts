import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatCidr, formatNetwork, parseCidr } from '../ip/cidr.js';
import { formatSubnetEnv, parseSubnetEnv, readSubnetEnv, SubnetEnvError, writeSubnetEnv, type SubnetEnv } from './env.js';

const env: SubnetEnv = { network: parseCidr('10.244.0.0/16'), subnet: parseCidr('10.244.3.0/24'), mtu: 1450, ipMasq: true };

describe('subnet.env', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weft-env-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes flannel format with the first host address of the subnet', () => {
    assert.equal(formatSubnetEnv(env), 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  });

  it('round-trips through a file, creating missing directories and leaving no temp files', async () => {
    const path = join(dir, 'run', 'flannel', 'subnet.env');
    await writeSubnetEnv(path, env);
    const back = await readSubnetEnv(path);
    assert.ok(back);
    assert.equal(formatNetwork(back.network), '10.244.0.0/16');
    assert.equal(formatNetwork(back.subnet), '10.244.3.0/24');
    assert.equal(formatCidr(back.subnet), '10.244.3.1/24');
    assert.equal(back.mtu, 1450);
    assert.equal(back.ipMasq, true);
    assert.deepEqual(await readdir(join(dir, 'run', 'flannel')), ['subnet.env']);
  });

  it('replaces an existing file', async () => {
    const path = join(dir, 'replace.env');
    await writeFile(path, 'old contents\n');
    await writeSubnetEnv(path, { ...env, subnet: parseCidr('10.244.9.0/24'), ipMasq: false });
    assert.match(await readFile(path, 'utf8'), /FLANNEL_SUBNET=10\.244\.9\.1\/24\n.*\nFLANNEL_IPMASQ=false/);
  });

  it('reads a missing file as undefined', async () => {
    assert.equal(await readSubnetEnv(join(dir, 'absent.env')), undefined);
  });

  it('accepts files written by flanneld, with comments and extra variables', () => {
    const parsed = parseSubnetEnv(
      '# written by flanneld\nFLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nFLANNEL_IPV6_NETWORK=\n',
    );
    assert.equal(formatNetwork(parsed.subnet), '10.244.7.0/24');
    assert.equal(parsed.ipMasq, false);
  });

  it('rejects broken files with the variable name', () => {
    const body = (over: Record<string, string>) =>
      Object.entries({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: '10.244.7.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true', ...over })
        .filter(([, v]) => v !== '')
        .map(([k, v]) => `${k}=${v}`)
        .join('\n');
    assert.throws(() => parseSubnetEnv(body({ FLANNEL_SUBNET: '' })), /FLANNEL_SUBNET is missing/);
    assert.throws(() => parseSubnetEnv(body({ FLANNEL_SUBNET: '10.244.7.1' })), /FLANNEL_SUBNET=10\.244\.7\.1 is not an IPv4 CIDR/);
    assert.throws(() => parseSubnetEnv(body({ FLANNEL_MTU: 'big' })), /FLANNEL_MTU=big/);
    assert.throws(() => parseSubnetEnv(body({ FLANNEL_IPMASQ: 'yes' })), SubnetEnvError);
  });
});
