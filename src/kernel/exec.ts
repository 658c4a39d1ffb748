import { collect, type Collected } from '../util/proc.js';

/**
 * A network namespace, named by a path (/run/netns/NAME, /proc/PID/ns/net) or undefined for the
 * namespace this process runs in.
 */
export type Netns = string | undefined;

/** Runs argv; rejects with its stderr when it exits non-zero. */
export async function run(argv: string[], input?: string): Promise<Collected> {
  const r = await collect(argv, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr.trim() || `exit ${r.code ?? r.signal}`}`);
  return r;
}
