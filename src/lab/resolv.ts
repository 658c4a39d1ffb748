import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { DNS } from '../cni/spec.js';
import { writeFileAtomic } from '../util/file.js';

/**
 * A lab pod's resolv.conf, written as a runtime that honours the CNI result's `dns` would. `ip netns
 * exec` bind-mounts /etc/netns/<namespace>/resolv.conf over /etc/resolv.conf for whatever it runs,
 * so the pod's containers and `weft lab exec` resolve with the real glibc stub through it.
 */
export const ETC_NETNS = '/etc/netns';

export function resolvConfText(dns: DNS): string {
  return [
    ...(dns.nameservers ?? []).map((n) => `nameserver ${n}`),
    ...(dns.domain ? [`domain ${dns.domain}`] : []),
    ...(dns.search?.length ? [`search ${dns.search.join(' ')}`] : []),
    ...(dns.options?.length ? [`options ${dns.options.join(' ')}`] : []),
  ]
    .map((l) => `${l}\n`)
    .join('');
}

export const resolvConfPath = (ns: string) => join(ETC_NETNS, ns, 'resolv.conf');

/** Writes the pod's resolv.conf when the result names nameservers; returns its path. */
export function writeResolvConf(ns: string, dns: DNS | undefined): string | undefined {
  if (!dns?.nameservers?.length) return undefined;
  mkdirSync(join(ETC_NETNS, ns), { recursive: true });
  // Not fsynced, as the lab's state (state.ts writeState): the pod's namespace does not outlive a crash either.
  writeFileAtomic(resolvConfPath(ns), resolvConfText(dns), { durable: false });
  return resolvConfPath(ns);
}

/** Removes /etc/netns/<ns> for each namespace that starts with `prefix` (one pod's, or a whole lab's). */
export function removeResolvConfs(prefix: string, exact = false): void {
  let names: string[];
  try {
    names = readdirSync(ETC_NETNS);
  } catch {
    return;
  }
  for (const n of names) if (exact ? n === prefix : n.startsWith(prefix)) rmSync(join(ETC_NETNS, n), { recursive: true, force: true });
}
