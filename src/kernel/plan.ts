import { writeFileSync } from 'node:fs';
import { inNetns, KernelError, run, type Netns } from './exec.js';
import { NetlinkSession, supported } from './netlink.js';

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

  /** One shell-like line per op: the dry run (`weft agent status` shows the one pending). */
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
 * Applies a plan. Consecutive iproute2 ops for one namespace form a batch: when netlink.ts speaks
 * every op of it (the CNI hot path does), it goes over rtnetlink in this process; otherwise to one
 * `ip -batch` process. Either way a tolerated failure resumes the batch after it. Returns what
 * `show` commands in the plan printed (iproute2's JSON).
 */
export async function apply(plan: Plan): Promise<string> {
  const ops = plan.ops;
  let shown = '';
  let session: NetlinkSession | undefined;
  try {
    for (let i = 0; i < ops.length; ) {
      const op = ops[i]!;
      if (op.tool === 'ip') {
        let j = i;
        while (j < ops.length && ops[j]!.tool === 'ip' && ops[j]!.ns === op.ns) j++;
        const batch = ops.slice(i, j) as Extract<Op, { tool: 'ip' }>[];
        if (batch.every((o) => supported(o.cmd))) {
          const s = (session ??= new NetlinkSession());
          shown += await resumable(batch, (rest) => s.run(op.ns, rest.map((o) => o.cmd)));
        } else {
          shown += await resumable(batch, (rest) => ipBatch(op.ns, rest));
        }
        i = j;
        continue;
      }
      await applyOther(op);
      i++;
    }
  } finally {
    session?.close();
  }
  return shown;
}

async function applyOther(op: Exclude<Op, { tool: 'ip' }>): Promise<void> {
  if (op.tool === 'sysctl') return sysctl(op.ns, op.key, op.value);
  try {
    await (op.tool === 'nft' ? run(inNetns(op.ns, 'nft', ['-f', '-']), op.script) : run(inNetns(op.ns, 'bridge', op.cmd)));
  } catch (e) {
    if (!tolerated(op, e)) throw e;
  }
}

function tolerated(op: { tolerate?: 'exists' | 'missing' } | undefined, e: unknown): boolean {
  return e instanceof KernelError && (op?.tolerate === 'exists' ? e.exists : op?.tolerate === 'missing' ? e.notFound : false);
}

async function ipBatch(ns: Netns, ops: Extract<Op, { tool: 'ip' }>[]): Promise<string> {
  const script = ops.map((o) => o.cmd.map(batchQuote).join(' ')).join('\n') + '\n';
  return (await run(inNetns(ns, 'ip', ['-j', '-batch', '-']), script)).stdout;
}

/** Runs a batch with `exec`; a failed line whose op tolerates that error resumes the batch after it. */
async function resumable(ops: Extract<Op, { tool: 'ip' }>[], exec: (rest: Extract<Op, { tool: 'ip' }>[]) => Promise<string>): Promise<string> {
  let rest = ops;
  let shown = '';
  while (rest.length > 0) {
    try {
      return shown + (await exec(rest));
    } catch (e) {
      if (!(e instanceof KernelError) || e.line === undefined || !tolerated(rest[e.line - 1], e)) throw e;
      shown += e.stdout;
      rest = rest.slice(e.line);
    }
  }
  return shown;
}

/** iproute2's batch parser knows "..." quoting but no escapes, and a word starting with # is a comment. */
function batchQuote(word: string): string {
  if (word.includes('"')) throw new KernelError(`ip -batch cannot carry the word ${word}: it contains a double quote`, 'ip -batch', '');
  return /^[^\s'\\#]+$/.test(word) ? word : `"${word}"`;
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
