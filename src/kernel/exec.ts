import { spawn } from 'node:child_process';

/**
 * A network namespace, named by a path (/run/netns/NAME, /proc/PID/ns/net) or undefined for the
 * namespace this process runs in.
 */
export type Netns = string | undefined;

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs argv to its end and collects its output; never rejects on a non-zero exit. */
export function collect(argv: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => reject(new Error(`cannot run ${argv[0]}: ${e.message}`)));
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/** Runs argv; rejects with its stderr when it exits non-zero. */
export async function run(argv: string[], input?: string): Promise<RunResult> {
  const r = await collect(argv, input);
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr.trim() || `exit ${r.code}`}`);
  return r;
}
