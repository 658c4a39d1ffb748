import { openSync, closeSync, writeSync } from 'node:fs';
import { KernelError, tolerated } from './errors.js';
import type { Netns } from './exec.js';
import { applyElements, elementsOnly, ownCommits } from './nfnl.js';
import { commands, renderOp, type Op } from './ops.js';
import { execRtnl, speaksRtnl, type RtnlOp } from './rtnl.js';
import { inNamespace, Sock } from './socket.js';
import { ipBatch, runTool } from './tools.js';

/** The exact changes to make, in order: plain data, printable (dry run) and appliable. */
export class Plan {
  readonly ops: Op[] = [];

  add(...ops: Op[]): this {
    this.ops.push(...ops);
    return this;
  }

  get empty(): boolean {
    return this.ops.length === 0;
  }

  /** One shell command per kernel change (nft transactions as here-documents): the dry run. */
  render(): string {
    return this.ops.flatMap(renderOp).join('\n');
  }
}

const describe = (op: Op): string => renderOp(op).join('; ');

/**
 * Sets a sysctl in `ns` by writing /proc/sys, which shows the namespace of the thread that opens
 * it: the write happens with the thread inside `ns`. Keys use dots or, where an interface name has
 * a dot (flannel.1), slashes.
 */
function sysctl(ns: Netns, key: string, value: string): void {
  const path = `/proc/sys/${key.includes('/') ? key : key.replace(/\./g, '/')}`;
  inNamespace(ns, () => {
    const fd = openSync(path, 'w');
    try {
      writeSync(fd, value);
    } finally {
      closeSync(fd);
    }
  });
}

/**
 * Applies a plan in order, stopping at the first failure an op does not tolerate (a KernelError
 * naming the op). rtnetlink ops go over one socket per namespace in this process; TUN devices go to
 * `ip` (consecutive ones for a namespace in one `ip -batch`); nftables transactions to `nft -f`,
 * except element changes of IPv4 sets, which go over nfnetlink; sysctls are written in place.
 */
export async function apply(plan: Plan): Promise<void> {
  const socks = new Map<string, Sock>();
  const sockIn = (ns: Netns): Sock => {
    let s = socks.get(ns ?? '');
    if (!s) socks.set(ns ?? '', (s = Sock.open(ns)));
    return s;
  };
  const ops = plan.ops;
  try {
    for (let i = 0; i < ops.length;) {
      const op = ops[i]!;
      if (speaksRtnl(op)) {
        await attempt(op, () => execRtnl(sockIn(op.ns), op as RtnlOp, describe(op)));
        i++;
      } else if (op.op === 'sysctl') {
        await attempt(op, () => sysctl(op.ns, op.key, op.value));
        i++;
      } else if (op.op === 'nft') {
        const tx = op.tx;
        if (elementsOnly(tx)) await attempt(op, () => ownCommits(op.ns, () => applyElements(op.ns, tx, describe(op))));
        else if (!tx.empty) await attempt(op, () => ownCommits(op.ns, () => runTool(op.ns, commands(op)[0]!, describe(op)).then(() => 1)));
        i++;
      } else {
        let j = i;
        while (j < ops.length && !speaksRtnl(ops[j]!) && ops[j]!.op === 'addLink' && ops[j]!.ns === op.ns) j++;
        await batch(op.ns, ops.slice(i, j));
        i = j;
      }
    }
  } finally {
    for (const s of socks.values()) s.close();
  }
}

async function attempt(op: Op, fn: () => unknown): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (tolerated(op.tolerate, e)) return;
    if (e instanceof KernelError || !(e instanceof Error)) throw e;
    throw new KernelError(`${describe(op)}: ${e.message}`, 'invalid', describe(op));
  }
}

/** `ip -batch` of ops that only iproute2 runs here; a tolerated failure resumes after it. */
async function batch(ns: Netns, ops: Op[]): Promise<void> {
  let rest = ops;
  while (rest.length > 0) {
    try {
      await ipBatch(ns, rest.flatMap(commands), rest.map(describe));
      return;
    } catch (e) {
      const index = (e as { index?: number }).index ?? 0;
      if (!tolerated(rest[index]?.tolerate, e)) throw e;
      rest = rest.slice(index + 1);
    }
  }
}
