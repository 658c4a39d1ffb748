import { writeFileSync } from 'node:fs';
import { inNetns, KernelError, run, type Netns } from './exec.js';

/**
 * One change to Linux networking. `ip` ops are iproute2 commands without the leading `ip`
 * (e.g. ['link', 'set', 'eth0', 'up']). `tolerate` names the errors that mean "already as wanted".
 */
export type Op =
  | { tool: 'ip'; ns: Netns; cmd: string[]; tolerate?: 'exists' | 'missing' }
  | { tool: 'nft'; ns: Netns; script: string; tolerate?: 'missing' }
  | { tool: 'bridge'; ns: Netns; cmd: string[]; tolerate?: 'exists' | 'missing' }
  | { tool: 'sysctl'; ns: Netns; key: string; value: string };

/** The exact changes to make, in order: printable (dry run) and appliable. */
export class Plan {
  readonly ops: Op[] = [];

  ip(ns: Netns, cmd: string[], tolerate?: 'exists' | 'missing'): this {
    this.ops.push(tolerate ? { tool: 'ip', ns, cmd, tolerate } : { tool: 'ip', ns, cmd });
    return this;
  }

  nft(ns: Netns, script: string, tolerate?: 'missing'): this {
    this.ops.push(tolerate ? { tool: 'nft', ns, script, tolerate } : { tool: 'nft', ns, script });
    return this;
  }

  /** A `bridge` command without the leading `bridge` (fdb entries of VXLAN devices). */
  bridge(ns: Netns, cmd: string[], tolerate?: 'exists' | 'missing'): this {
    this.ops.push(tolerate ? { tool: 'bridge', ns, cmd, tolerate } : { tool: 'bridge', ns, cmd });
    return this;
  }

  sysctl(ns: Netns, key: string, value: string): this {
    this.ops.push({ tool: 'sysctl', ns, key, value });
    return this;
  }

  get empty(): boolean {
    return this.ops.length === 0;
  }

  /** One shell-like line per op, the way `--dry-run` prints it. */
  render(): string {
    return this.ops
      .map((op) => {
        const where = op.ns === undefined ? '' : `[${op.ns}] `;
        switch (op.tool) {
          case 'ip':
            return `${where}ip ${op.cmd.map(quote).join(' ')}`;
          case 'bridge':
            return `${where}bridge ${op.cmd.map(quote).join(' ')}`;
          case 'nft':
            return `${where}nft -f - <<'EOF'\n${op.script.trimEnd()}\nEOF`;
          case 'sysctl':
            return `${where}sysctl -w ${op.key}=${op.value}`;
        }
      })
      .join('\n');
  }
}

function quote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `"${word.replace(/(["\\$`])/g, '\\$1')}"`;
}

/**
 * Applies a plan. Consecutive iproute2 ops for one namespace go to one `ip -batch` process, so an
 * ADD costs two or three execs whatever its size; a tolerated failure resumes the batch after it.
 * Returns what `show` commands in the plan printed (iproute2 runs in JSON mode).
 */
export async function apply(plan: Plan): Promise<string> {
  const ops = plan.ops;
  let shown = '';
  for (let i = 0; i < ops.length; ) {
    const op = ops[i]!;
    if (op.tool === 'ip') {
      let j = i;
      while (j < ops.length && ops[j]!.tool === 'ip' && ops[j]!.ns === op.ns) j++;
      shown += await ipBatch(op.ns, ops.slice(i, j) as Extract<Op, { tool: 'ip' }>[]);
      i = j;
      continue;
    }
    if (op.tool === 'nft') {
      try {
        await run(inNetns(op.ns, 'nft', ['-f', '-']), op.script);
      } catch (e) {
        if (!(op.tolerate === 'missing' && e instanceof KernelError && e.notFound)) throw e;
      }
    } else if (op.tool === 'bridge') {
      try {
        await run(inNetns(op.ns, 'bridge', op.cmd));
      } catch (e) {
        const ok = e instanceof KernelError && (op.tolerate === 'exists' ? e.exists : op.tolerate === 'missing' ? e.notFound : false);
        if (!ok) throw e;
      }
    } else {
      await sysctl(op.ns, op.key, op.value);
    }
    i++;
  }
  return shown;
}

async function ipBatch(ns: Netns, ops: Extract<Op, { tool: 'ip' }>[]): Promise<string> {
  let rest = ops;
  let shown = '';
  while (rest.length > 0) {
    const script = rest.map((o) => o.cmd.map(batchQuote).join(' ')).join('\n') + '\n';
    try {
      return shown + (await run(inNetns(ns, 'ip', ['-j', '-batch', '-']), script)).stdout;
    } catch (e) {
      if (!(e instanceof KernelError) || e.line === undefined) throw e;
      const failed = rest[e.line - 1];
      const ok = failed?.tolerate === 'exists' ? e.exists : failed?.tolerate === 'missing' ? e.notFound : false;
      if (!ok) throw e;
      shown += e.stdout;
      rest = rest.slice(e.line);
    }
  }
  return shown;
}

function batchQuote(word: string): string {
  return /^[^\s"'\\]+$/.test(word) ? word : `"${word.replace(/(["\\])/g, '\\$1')}"`;
}

/**
 * Sets a sysctl in `ns`. /proc/sys/net shows the namespace of whoever opens it, hence the nsenter.
 * Keys use dots or, where an interface name has a dot (flannel.1), slashes.
 */
export async function sysctl(ns: Netns, key: string, value: string): Promise<void> {
  const path = `/proc/sys/${key.includes('/') ? key : key.replace(/\./g, '/')}`;
  if (ns === undefined) {
    writeFileSync(path, value);
    return;
  }
  await run(['nsenter', `--net=${ns}`, 'sh', '-c', 'printf %s "$1" > "$2"', 'sh', value, path]);
}
