// Builds what `weft cni install` copies: the thin CNI front (native/cni-front.c), which names no
// path of this checkout, and the plugin's direct path bundled into one file (koffi stays outside:
// it is a native module, installed beside the bundle). Also the web view's page (`weft ui`): its
// script bundled with cytoscape and ELK into build/ui/app.js beside its HTML and CSS, so the page
// needs nothing from a CDN. And the lab's long-lived processes (agents, runtimes, the registry
// process) as one file each under build/lab: a lab starts one Node process per node and per
// runtime at once, and loading dist/'s hundreds of modules cost each of them 2-3 times the CPU.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
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
// Each module keeps its own import.meta.url (the file it was built from under dist/), so the paths it
// finds relative to itself (workers, other entry points, package.json, build/) stay the same.
const ownUrl = (outdir) => ({
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\/dist\/src\/.*\.js$/ }, (args) => ({
      contents: readFileSync(args.path, 'utf8').replaceAll('import.meta.url', `new URL(${JSON.stringify(relative(outdir, args.path))}, import.meta.url).href`),
      loader: 'js',
    }));
  },
});
const lab = `${root}/build/lab`;
// Named as in dist/ (ES modules by the package's type), so a lab's processes still read `weft agent ...`.
for (const [entry, out] of [
  ['cli/main.js', 'weft'],
  ['lab/workload-main.js', 'workload-main.js'],
  ['lab/registry-main.js', 'registry-main.js'],
]) {
  await build({
    entryPoints: [`${root}/dist/src/${entry}`],
    outfile: `${lab}/${out}`,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // koffi is native; yaml is big and loaded only by the commands that read or print YAML.
    external: ['koffi', 'yaml'],
    // The CommonJS packages bundled here (prom-client, dns-packet) require Node's built-ins.
    banner: { js: "import { createRequire as weftCreateRequire } from 'node:module'; const require = weftCreateRequire(import.meta.url);" },
    plugins: [ownUrl(lab)],
    logLevel: 'warning',
  });
}
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
