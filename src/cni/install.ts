import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { writeFileAtomic } from '../util/file.js';

/** What the build makes (scripts/build-front.mjs): the C front, and the plugin bundled into one file. */
export const FRONT = fileURLToPath(new URL('../../../build/weft-cni-front', import.meta.url));
export const BUNDLE = fileURLToPath(new URL('../../../build/weft-cni.mjs', import.meta.url));

/**
 * The directory beside the fronts that the direct path runs from (native/cni-front.c finds it next to
 * its own file): `cni.mjs` (the bundle), `node` (a link to the Node that installed it) and koffi in
 * `node_modules` (a native module, so not in the bundle).
 */
export const RUNTIME_DIR = 'weft-cni';

/** The koffi package and its prebuilt platform package, as this installation resolves them. */
function koffiPackages(): { name: string; dir: string }[] {
  const main = createRequire(import.meta.url).resolve('koffi');
  const koffiDir = dirname(main);
  const out = [{ name: 'koffi', dir: koffiDir }];
  const platform = `@koromix/koffi-${process.platform}-${process.arch}`;
  try {
    out.push({ name: platform, dir: dirname(createRequire(main).resolve(`${platform}/package.json`)) });
  } catch {
    // koffi built from source keeps its binary in its own directory
  }
  return out;
}

/**
 * Installs the weft and weft-ipam plugins into `binDir`, independent of this checkout or package:
 * the runtime dir is written whole under a new name and swapped in by renaming a symlink, then the
 * fronts are replaced (each by rename), so a plugin run at any moment sees an old or a new install.
 */
export function installPlugins(binDir: string): string[] {
  for (const f of [FRONT, BUNDLE]) if (!existsSync(f)) throw new Error(`${f} is missing; run npm run build (or ./setup) first`);
  mkdirSync(binDir, { recursive: true });
  const stamp = `.${RUNTIME_DIR}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const staged = join(binDir, stamp);
  try {
    mkdirSync(join(staged, 'node_modules'), { recursive: true });
    cpSync(BUNDLE, join(staged, 'cni.mjs'));
    symlinkSync(realpathSync(process.execPath), join(staged, 'node'));
    for (const pkg of koffiPackages()) {
      cpSync(pkg.dir, join(staged, 'node_modules', pkg.name), { recursive: true, dereference: true });
    }
    const link = join(binDir, `${stamp}.link`);
    symlinkSync(stamp, link);
    renameSync(link, join(binDir, RUNTIME_DIR));
  } catch (e) {
    rmSync(staged, { recursive: true, force: true });
    throw e;
  }
  for (const old of readdirSync(binDir)) {
    if (old.startsWith(`.${RUNTIME_DIR}-`) && old !== stamp) rmSync(join(binDir, old), { recursive: true, force: true });
  }
  const front = readFileSync(FRONT);
  return ['weft', 'weft-ipam'].map((name) => {
    const dest = join(binDir, name);
    writeFileAtomic(dest, front, { mode: 0o755 });
    return dest;
  });
}
