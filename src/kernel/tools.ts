import { KernelError, type ErrorKind } from './errors.js';
import { collect, type Collected } from '../util/proc.js';
import type { Netns } from './exec.js';
import { nsArgv, type Command } from './ops.js';

/**
 * The fallback: ops run by iproute2 and nft processes (TUN devices, nftables, reading nftables).
 * Tools report failures only as text, so this is the one place that reads a kind from it.
 */
function kindOf(stderr: string): ErrorKind {
  if (/File exists/.test(stderr)) return 'exists';
  if (/Cannot find device|No such (file|process|device)|does not exist|not found|Cannot assign requested address/i.test(stderr)) return 'missing';
  if (/Device or resource busy/.test(stderr)) return 'busy';
  if (/Operation not permitted|Permission denied/.test(stderr)) return 'permission';
  if (/Invalid argument|syntax error|Error: .* is wrong/i.test(stderr)) return 'invalid';
  if (/not supported/i.test(stderr)) return 'unsupported';
  return 'other';
}

function failure(argv: string[], r: Collected, op?: string): KernelError {
  const reason =
    r.stderr
      .trim()
      .split('\n')
      .filter((l) => !/^Command failed/.test(l))
      .join('; ') || `exit ${r.code}`;
  return new KernelError(`${op ?? argv.join(' ')}: ${reason}`, kindOf(r.stderr), op ?? argv.join(' '), undefined, r.stderr);
}

/** Runs one command in `ns`. */
export async function runTool(ns: Netns, cmd: Command, op?: string): Promise<Collected> {
  const argv = [...nsArgv(ns, cmd.tool), ...cmd.args];
  const r = await collect(argv, cmd.input === undefined ? {} : { input: cmd.input });
  if (r.code !== 0) throw failure(argv, r, op);
  return r;
}

/** iproute2's batch parser knows "..." quoting but no escapes, and a word starting with # is a comment. */
function batchQuote(word: string): string {
  if (word.includes('"')) throw new KernelError(`ip -batch cannot carry the word ${word}: it contains a double quote`, 'invalid');
  return /^[^\s'\\#]+$/.test(word) ? word : `"${word}"`;
}

/**
 * `ip -batch -` of several ip commands for one namespace. A failure is thrown with `index`, the
 * position of the command that failed (iproute2 stops there).
 */
export async function ipBatch(ns: Netns, cmds: Command[], ops: string[]): Promise<void> {
  const argv = [...nsArgv(ns, 'ip'), '-batch', '-'];
  const r = await collect(argv, { input: cmds.map((c) => c.args.map(batchQuote).join(' ')).join('\n') + '\n' });
  if (r.code === 0) return;
  const m = /Command failed -:(\d+)|^-:(\d+):/m.exec(r.stderr);
  const index = m ? Number(m[1] ?? m[2]) - 1 : 0;
  throw Object.assign(failure(argv, r, ops[index]), { index });
}
