import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isAtomicTemp, writeFileAtomic } from './file.js';

describe('writeFileAtomic', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-util-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('replaces the contents, with the mode asked for, and leaves no temp file', () => {
    const f = join(dir, 'a.json');
    writeFileSync(f, 'old');
    writeFileAtomic(f, 'new', { mode: 0o600 });
    assert.equal(readFileSync(f, 'utf8'), 'new');
    assert.equal(statSync(f).mode & 0o777, 0o600);
    writeFileAtomic(f, Uint8Array.from([1, 2, 3]));
    assert.deepEqual([...readFileSync(f)], [1, 2, 3]);
    assert.deepEqual(readdirSync(dir), ['a.json']);
  });

  it('writes the same way without the fsyncs when not asked to be durable', () => {
    const f = join(dir, 'hint');
    writeFileAtomic(f, 'a', { durable: false });
    writeFileAtomic(f, 'b', { durable: false });
    assert.equal(readFileSync(f, 'utf8'), 'b');
    rmSync(f);
  });

  it('writes a large body whole', () => {
    const f = join(dir, 'big');
    const body = 'x'.repeat(5_000_000);
    writeFileAtomic(f, body);
    assert.equal(readFileSync(f, 'utf8'), body);
    rmSync(f);
  });

  it('fails on a missing directory without leaving anything behind', () => {
    assert.throws(() => writeFileAtomic(join(dir, 'nope', 'c'), 'x'), { code: 'ENOENT' });
    assert.deepEqual(readdirSync(dir), ['a.json']);
  });

  it('removes its temp file when the rename fails', () => {
    const target = join(dir, 'a-dir');
    mkdirSync(target);
    writeFileSync(join(target, 'child'), '');
    assert.throws(() => writeFileAtomic(target, 'x'), { code: /EISDIR|ENOTEMPTY|EEXIST/ });
    assert.deepEqual(readdirSync(dir).sort(), ['a-dir', 'a.json']);
    rmSync(target, { recursive: true });
  });

  it('names its temp files so a sweep can tell them from real files', () => {
    assert.ok(isAtomicTemp('.state.json.1234.0a1b2c3d.tmp'));
    assert.ok(!isAtomicTemp('state.json'));
    assert.ok(!isAtomicTemp('.state.json.tmp'));
    assert.ok(!isAtomicTemp('10.244.1.7'));
  });
});
