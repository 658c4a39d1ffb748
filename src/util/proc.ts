import { spawn } from 'node:child_process';

export interface Collected {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs argv to its end with `input` on stdin and collects its output. Never rejects on a non-zero exit
 * or a signal (the caller reads `code`/`signal`); rejects only when the program cannot be started.
 * After `timeoutMs` the process is killed with SIGKILL and resolves with `signal: 'SIGKILL'`.
 */
export async function collect(argv: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Collected> {
  if (argv.length === 0) throw new Error('collect: empty argv');
  const run = collectLater(argv, opts.env);
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(run.kill, opts.timeoutMs);
  try {
    return await run.send(opts.input ?? '');
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts argv now and gives it its stdin later: a program that loads slowly (a Node program and its
 * modules) does that while the caller still waits for what the input depends on. `send` writes the
 * input, closes stdin and collects as `collect` does; `cancel` (a no-op after `send`) closes stdin
 * unwritten and kills the process; `kill` kills it at any time.
 */
export function collectLater(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): { send: (input: string) => Promise<Collected>; cancel: () => void; kill: () => void } {
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => err.push(d));
  child.stdin.on('error', () => undefined);
  const done = new Promise<Collected>((resolve, reject) => {
    child.on('error', (e) => reject(new Error(`cannot run ${argv[0]}: ${e.message}`)));
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
  // Until `send`, a failure to start is the caller's to hear there, not an unhandled rejection.
  done.catch(() => undefined);
  let sent = false;
  return {
    send: (input) => {
      sent = true;
      child.stdin.end(input);
      return done;
    },
    cancel: () => {
      if (sent) return;
      sent = true;
      child.stdin.end();
      child.kill('SIGKILL');
    },
    kill: () => child.kill('SIGKILL'),
  };
}
