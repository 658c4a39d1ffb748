// Builds what `weft cni install` copies: the thin CNI front (native/cni-front.c), which names no
// path of this checkout, and the plugin's direct path bundled into one file (koffi stays outside:
// it is a native module, installed beside the bundle).
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
mkdirSync(`${root}/build`, { recursive: true });
execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', `${root}/build/weft-cni-front`, `${root}/native/cni-front.c`], { stdio: 'inherit' });
await build({
  entryPoints: [`${root}/dist/src/cni/main.js`],
  outfile: `${root}/build/weft-cni.mjs`,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['koffi'],
  logLevel: 'warning',
});
