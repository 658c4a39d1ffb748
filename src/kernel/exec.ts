import { spawn } from 'node:child_process';

/**
 * A network namespace, named by a path (/run/netns/NAME, /proc/PID/ns/net) or undefined for the
 * namespace this process runs in.
 */
export type Netns = string | undefined;

export class KernelError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly stderr: string,
    /** 1-based line of a batch that failed, when the tool said which. */
    readonly line?: number,
    /** What the command printed before it failed. */
    readonly stdout = '',
  ) {
    super(message);
  }

  get notFound(): boolean {
    return /Cannot find device|No such (file|process|device)|does not exist|not found/i.test(this.stderr);
  }

  get exists(): boolean {
    return /File exists/.test(this.stderr);
  }
}

const NAMED = /^(?:\/var)?\/run\/netns\/([^/]+)$/;

/**
 * The argv that runs `tool` inside `ns`. iproute2's -n takes only a name under /run/netns, so other
 * paths go through nsenter (one more exec, but only for paths a runtime made itself).
 */
export function inNetns(ns: Netns, tool: 'ip' | 'nft' | 'bridge', args: string[]): string[] {
  if (ns === undefined) return [tool, ...args];
  const named = NAMED.exec(ns);
  if (named && tool !== 'nft') return [tool, '-n', named[1]!, ...args];
  return ['nsenter', `--net=${ns}`, tool, ...args];
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export function run(argv: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => reject(new KernelError(`cannot run ${argv[0]}: ${e.message}`, argv.join(' '), e.message)));
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code === 0) return resolve({ stdout, stderr });
      const failed = /Command failed -:(\d+)|^-:(\d+):/m.exec(stderr);
      const line = failed ? Number(failed[1] ?? failed[2]) : undefined;
      const reason = stderr.trim().split('\n').filter((l) => !/^Command failed/.test(l)).join('; ') || `exit ${code}`;
      reject(new KernelError(`${argv.join(' ')}: ${reason}`, argv.join(' '), stderr, line, stdout));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}
