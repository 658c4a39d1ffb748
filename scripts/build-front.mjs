// Builds what `weft cni install` copies: the thin CNI front (native/cni-front.c), which names no
// path of this checkout, and the plugin's direct path bundled into one file (koffi stays outside:
// it is a native module, installed beside the bundle). Also the web view's page (`weft ui`): its
// script bundled with cytoscape and ELK into build/ui/app.js beside its HTML and CSS, so the page
// needs nothing from a CDN.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
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
mkdirSync(`${root}/build/ui`, { recursive: true });
await build({
  entryPoints: [`${root}/src/ui/page/app.ts`],
  outfile: `${root}/build/ui/app.js`,
  bundle: true,
  platform: 'browser',
  format: 'iife',
  target: 'chrome110',
  minify: true,
  logLevel: 'warning',
});
for (const f of ['index.html', 'style.css']) copyFileSync(`${root}/src/ui/page/${f}`, `${root}/build/ui/${f}`);
