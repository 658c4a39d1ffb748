import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The CLI as a user runs it, for tests that drive a lab end to end. */
export const WEFT = fileURLToPath(new URL('../../bin/weft', import.meta.url));

export function weft(...args: string[]): { code: number; out: string; stdout: string } {
  const r = spawnSync(process.execPath, [WEFT, ...args], { encoding: 'utf8', timeout: 180_000 });
  return { code: r.status ?? 1, out: `${r.stdout}${r.stderr}`, stdout: r.stdout.trim() };
}
