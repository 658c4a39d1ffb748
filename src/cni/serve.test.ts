import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resultIp, runHooks } from './serve.js';

describe('serveCni hooks', () => {
  it('reads the pod IPv4 address from an ADD result', () => {
    assert.equal(resultIp('{"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"},{"address":"10.244.1.5/24","gateway":"10.244.1.1"}]}\n'), '10.244.1.5');
    assert.equal(resultIp('{"ips":[]}'), undefined);
    assert.equal(resultIp('not json'), undefined);
  });

  it('calls added with the IP on ADD and deleted on DEL, and nothing for other commands', async () => {
    const calls: string[] = [];
    const hooks = {
      added: (env: Record<string, string>, ip: string | undefined) => calls.push(`added ${env.CNI_ARGS} ${ip}`),
      deleted: (env: Record<string, string>) => calls.push(`deleted ${env.CNI_CONTAINERID}`),
    };
    const log = (m: string) => calls.push(`log ${m}`);
    await runHooks(hooks, { CNI_COMMAND: 'ADD', CNI_ARGS: 'K8S_POD_NAME=p' }, '{"ips":[{"address":"10.244.1.5/24"}]}', log);
    await runHooks(hooks, { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1' }, '', log);
    await runHooks(hooks, { CNI_COMMAND: 'CHECK' }, '', log);
    assert.deepEqual(calls, ['added K8S_POD_NAME=p 10.244.1.5', 'deleted c1']);
  });

  it('logs a failing hook instead of failing the call, and stops waiting for a slow one', async () => {
    const logs: string[] = [];
    await runHooks({ added: () => Promise.reject(new Error('etcd down')) }, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1' }, '{}', (m) => logs.push(m));
    assert.deepEqual(logs, ['ADD hook for c1 failed: etcd down']);
    const started = performance.now();
    let finish: () => void = () => undefined;
    const slow = new Promise<void>((r) => (finish = r));
    await runHooks({ deleted: () => slow }, { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c2' }, '', (m) => logs.push(m), 50);
    finish();
    assert.ok(performance.now() - started < 5000);
    assert.equal(logs[1], 'DEL hook for c2 still running after 50 ms; answering');
  });
});
