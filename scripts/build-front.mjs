// Compiles the thin CNI front (native/cni-front.c) with this installation's Node and direct-path
// entry built in; `weft cni install` copies the result.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
mkdirSync(`${root}/build`, { recursive: true });
execFileSync('cc', [
  '-O2', '-Wall', '-Wextra', '-Werror',
  `-DWEFT_NODE="${process.execPath}"`,
  `-DWEFT_MAIN="${root}/dist/src/cni/main.js"`,
  '-o', `${root}/build/weft-cni-front`,
  `${root}/native/cni-front.c`,
], { stdio: 'inherit' });
