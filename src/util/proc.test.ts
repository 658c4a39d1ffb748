import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { collect } from './proc.js';

describe('collect', () => {
  it('feeds stdin and collects stdout and stderr', async () => {
    const r = await collect(['sh', '-c', 'tr a-z A-Z; echo oops >&2'], { input: 'hello' });
    assert.deepEqual(r, { code: 0, signal: null, stdout: 'HELLO', stderr: 'oops\n' });
  });

  it('resolves on a non-zero exit', async () => {
    const r = await collect(['sh', '-c', 'echo out; exit 3']);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, 'out\n');
  });

  it('passes the environment it is given', async () => {
    const r = await collect(['sh', '-c', 'printf %s "$WEFT_X"'], { env: { PATH: process.env.PATH, WEFT_X: 'y' } });
    assert.equal(r.stdout, 'y');
  });

  it('kills the process at the timeout and reports the signal', async () => {
    const r = await collect(['sleep', '30'], { timeoutMs: 100 });
    assert.equal(r.code, null);
    assert.equal(r.signal, 'SIGKILL');
  });

  it('rejects when the program cannot be started, naming it', async () => {
    await assert.rejects(collect(['/nonexistent/weft-x']), /cannot run \/nonexistent\/weft-x/);
    await assert.rejects(collect([]), /empty argv/);
  });
});
