import type { TraceEndpoint, TraceResult } from './types.js';

/**
 * A trace as text, one line per hop: where it happened, what kind of step, whether the kernel
 * reported it (observed) or Weft worked it out (inferred), and what was decided there.
 */
const who = (e: TraceEndpoint) => `${e.name ?? e.spec} (${e.kind === 'service' ? `Service, cluster IP ${e.ip}` : e.ip})`;

export function formatTrace(r: TraceResult): string {
  const head = `weft trace: ${who(r.src)} → ${who(r.dst)}, ${r.proto}${r.port !== undefined ? ` port ${r.port}` : ''}, lab ${r.lab} (${r.backend})`;
  const w = Math.max(5, ...r.hops.map((h) => h.where.length));
  const k = Math.max(4, ...r.hops.map((h) => h.kind.length));
  const lines = r.hops.map((h) => {
    const mark = h.verdict?.action === 'drop' ? '✗' : h.observed ? '●' : '○';
    return `  ${mark} ${h.where.padEnd(w)}  ${h.kind.padEnd(k)}  ${h.summary}${h.observed ? '' : `  [${h.source}]`}`;
  });
  const endpoint = r.endpoint
    ? `\nendpoint chosen by the DNAT: ${r.endpoint.ip}${r.endpoint.port !== undefined ? `:${r.endpoint.port}` : ''}${r.endpoint.pod ? ` (${r.endpoint.pod})` : ''}`
    : '';
  const end =
    r.outcome === 'delivered'
      ? `delivered in ${r.ms} ms`
      : r.outcome === 'dropped'
        ? `DROPPED by ${r.droppedBy}`
        : `no answer: ${r.droppedBy ?? 'the probe was not answered'}`;
  const observed = r.hops.filter((h) => h.observed).length;
  return [
    head,
    '',
    ...lines,
    '',
    `${end}${endpoint}`,
    `● observed (nft monitor trace, ip route get, conntrack): ${observed}   ○ inferred: ${r.hops.length - observed}   ✗ where it was dropped`,
  ].join('\n');
}
