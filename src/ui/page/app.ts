import cytoscape, { type Core, type ElementDefinition, type NodeSingular } from 'cytoscape';
import elk from 'cytoscape-elk';
import type { CheckResult } from '../../lab/verify.js';
import type { TraceHop, TraceResult } from '../../trace/types.js';
import type { UiGraph, UiNode } from '../graph.js';

/**
 * The page of `weft ui`: the lab as a cytoscape graph laid out by ELK (layered, top to bottom:
 * outside and etcd, the underlay switch, each node as a box holding eth0, its tunnel device, cni0
 * and its pods, then the Services), kept live over server-sent events.
 */
cytoscape.use(elk);

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const esc = (s: unknown) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

const COLORS = {
  infra: ['#e6ebf2', '#5b6b80'],
  nic: ['#d9dee5', '#4a5668'],
  bridge: ['#d6e8fb', '#2f6fb5'],
  tunnel: ['#fde3c7', '#c86b12'],
  pod: ['#dcf3df', '#2f8a43'],
  svc: ['#ece1f7', '#7442a8'],
} as const;

const devId = (node: string, dev: string) => `dev:${node}:${dev}`;
/** Routed mode's stand-in for cni0: the node's /32 routes to its pods. */
const ROUTED = 'pod-routes';
const nodeBox = (node: string) => `node:${node}`;
const podId = (pod: string) => `pod:${pod}`;
const MESH_MAX = 6;

/** Box size from the label's lines, so every label fits inside its shape. */
function box(label: string): { label: string; w: number; h: number } {
  const lines = label.split('\n');
  return { label, w: Math.max(70, Math.max(...lines.map((l) => l.length)) * 7.3 + 18), h: lines.length * 16 + 12 };
}

function tunnelText(g: UiGraph, n: UiNode): string {
  const t = n.tunnel;
  if (!t) return '';
  if (t.kind === 'vxlan') return `${t.name}\nVXLAN VNI ${t.vni ?? '?'}${t.addr ? `\n${t.addr}` : ''}`;
  return `${t.name}\n${g.backend} tunnel (TUN)${t.addr ? `\n${t.addr}` : ''}`;
}

function elements(g: UiGraph): ElementDefinition[] {
  const els: ElementDefinition[] = [];
  const node = (id: string, kind: string, label: string, extra: Record<string, unknown> = {}, parent?: string) =>
    els.push({ group: 'nodes', data: { id, kind, ...box(label), ...extra, ...(parent && { parent }) }, classes: kind });
  const edge = (source: string, target: string, kind: string, label = '') =>
    els.push({ group: 'edges', data: { id: `${kind}:${source}->${target}`, source, target, kind, label }, classes: kind });

  node('outside', 'infra', `outside world\n${g.outside.gateway} gateway · ${g.outside.ip}`, { ref: 'outside' });
  if (g.etcd) node('etcd', 'infra', `etcd (leases, Services)\n${g.etcd.ip}:2379`, { ref: 'etcd' });
  if (g.monitoring) node('monitoring', 'infra', `Prometheus\n${g.monitoring.ip}:${g.monitoring.port}`, { ref: 'monitoring' });
  node('underlay', 'infra', `underlay network ${g.underlay.cidr}\nswitch ${g.underlay.bridge}`, { ref: 'underlay' });
  edge('outside', 'underlay', 'wire');
  if (g.etcd) edge('etcd', 'underlay', 'wire');
  if (g.monitoring) edge('monitoring', 'underlay', 'wire');

  for (const n of g.nodes) {
    const id = nodeBox(n.name);
    els.push({
      group: 'nodes',
      data: { id, kind: 'node', ref: n.name, label: `${n.name}${n.pending ? ' (pending)' : ''} · ${n.ip}\npods ${n.subnet ?? '?'}` },
      classes: 'node',
    });
    const nic = devId(n.name, 'eth0');
    node(nic, 'nic', `eth0 ${n.ip}`, { ref: n.name }, id);
    edge('underlay', nic, 'wire');
    let inner = nic;
    if (n.tunnel) {
      const t = devId(n.name, n.tunnel.name);
      node(t, 'tunnel', tunnelText(g, n), { ref: n.name }, id);
      edge(nic, t, 'wire', 'encap');
      inner = t;
    }
    if (n.shim) {
      const sh = devId(n.name, n.shim.name);
      node(sh, 'bridge', `${n.shim.name} (macvlan)\n${n.shim.addr ?? ''}`, { ref: n.name }, id);
      edge(nic, sh, 'wire');
    }
    if (n.bridge) {
      const b = devId(n.name, n.bridge.name);
      node(b, 'bridge', `${n.bridge.name} bridge\n${n.bridge.addr ?? ''}`, { ref: n.name }, id);
      edge(inner, b, 'wire', 'route');
    } else if (g.cniMode === 'routed') {
      // No bridge: the node's routing table is the pods' switch, a /32 route over each pod's host veth.
      const r = devId(n.name, ROUTED);
      node(r, 'bridge', `routed pods (no bridge)\n/32 route per pod, gateway 169.254.1.1`, { ref: n.name }, id);
      edge(inner, r, 'wire', 'route');
    }
  }

  for (const p of g.pods) {
    const n = g.nodes.find((x) => x.name === p.node);
    const labels = Object.entries(p.labels).map(([k, v]) => `${k}=${v}`);
    const ns = p.namespace === 'default' ? '' : ` (${p.namespace})`;
    node(podId(p.name), 'pod', [`${p.name}${ns}`, p.pending ? 'pending' : `eth0 ${p.ip}`, ...labels].join('\n'), { ref: p.name }, n && nodeBox(n.name));
    if (!n) continue;
    if (n.bridge) edge(devId(n.name, n.bridge.name), podId(p.name), 'wire', 'veth');
    else if (g.cniMode === 'routed') edge(devId(n.name, ROUTED), podId(p.name), 'wire', n.podVeths?.[p.ip] ?? 'veth');
    else edge(devId(n.name, 'eth0'), podId(p.name), 'wire', 'macvlan');
  }

  for (const s of g.services) {
    const id = `svc:${s.key}`;
    const ready = s.endpoints.filter((e) => e.ready).length;
    // The cluster DNS's ClusterIP sits on every node's weft-dns device: the agent answers it there.
    const local = g.nodes.some((n) => s.clusterIP && n.dns?.addr?.startsWith(`${s.clusterIP}/`));
    const behind = local ? 'answered on every node (weft-dns)' : `${ready} endpoint${ready === 1 ? '' : 's'}`;
    node(id, 'svc', `Service ${s.namespace}/${s.name}\n${s.clusterIP ? `ClusterIP ${s.clusterIP}` : s.type}\n${s.ports || 'no ports'} · ${behind}`, {
      ref: s.key,
    });
    for (const e of s.endpoints) if (e.pod) edge(podId(e.pod), id, 'endpoint');
  }

  // Drawn over the layout, not laid out: they join nodes side by side. Every pair of nodes has one;
  // only the first carries the words, and beyond MESH_MAX nodes the lines would hide the picture.
  const ready = g.nodes.filter((n) => !n.pending);
  const pods = (n: UiNode) => (n.bridge ? devId(n.name, n.bridge.name) : g.cniMode === 'routed' ? devId(n.name, ROUTED) : undefined);
  const ends = (n: UiNode) => (g.backend === 'host-gw' ? pods(n) : n.tunnel && devId(n.name, n.tunnel.name));
  const words: Record<string, string> = {
    vxlan: `VXLAN tunnel, VNI ${ready[0]?.tunnel?.vni ?? '?'}\nUDP 8472 over the underlay`,
    udp: 'udp backend tunnel\nUDP 8285 over the underlay',
    'host-gw': 'host-gw: plain routes\nvia the node IPs, no tunnel',
  };
  let labelled = false;
  for (let i = 0; i < ready.length && ready.length <= MESH_MAX; i++) {
    for (let j = i + 1; j < ready.length; j++) {
      const [a, b] = [ends(ready[i]!), ends(ready[j]!)];
      if (!a || !b || !words[g.backend]) continue;
      edge(a, b, 'peer', labelled ? '' : words[g.backend]);
      labelled = true;
    }
  }
  return els;
}

const style: cytoscape.StylesheetJson = [
  {
    selector: 'node[w]',
    style: {
      width: 'data(w)',
      height: 'data(h)',
    },
  },
  {
    selector: 'node',
    style: {
      label: 'data(label)',
      'text-wrap': 'wrap',
      'text-valign': 'center',
      'text-halign': 'center',
      'font-size': 12,
      'font-family': 'DejaVu Sans Mono, monospace',
      shape: 'round-rectangle',
      'border-width': 1.5,
    },
  },
  ...Object.entries(COLORS).map(([kind, [fill, line]]) => ({ selector: `node.${kind}`, style: { 'background-color': fill, 'border-color': line } })),
  {
    selector: 'node.node',
    style: {
      'background-color': '#f4f6f9',
      'border-color': '#7b8ba0',
      'border-style': 'dashed',
      'text-valign': 'top',
      'text-halign': 'center',
      'text-margin-y': -3,
      'font-size': 13,
      'font-weight': 'bold',
      'font-family': 'DejaVu Sans, sans-serif',
      'text-background-color': '#fff',
      'text-background-opacity': 1,
      'text-background-padding': '3px',
      padding: '14px',
    },
  },
  { selector: 'node.pod', style: { shape: 'round-rectangle', 'border-width': 2 } },
  {
    selector: 'edge',
    style: {
      width: 2,
      'line-color': '#8a99ab',
      'curve-style': 'bezier',
      label: 'data(label)',
      'font-size': 10,
      color: '#55606e',
      'text-background-color': '#fff',
      'text-background-opacity': 0.85,
      'text-background-padding': '1px',
    },
  },
  // Under the node boxes, so they do not cross the node's label on their way to its eth0.
  { selector: 'edge.wire[source = "underlay"]', style: { 'z-compound-depth': 'bottom' } },
  { selector: 'edge.endpoint', style: { 'line-style': 'dashed', 'line-color': '#a585c9', width: 1.5, 'target-arrow-shape': 'none' } },
  {
    selector: 'edge.peer',
    style: {
      'line-style': 'dashed',
      'line-color': '#c86b12',
      width: 3,
      color: '#9a4f0a',
      'font-size': 11,
      'text-wrap': 'wrap',
      'curve-style': 'unbundled-bezier',
      'control-point-distances': [-60],
    },
  },
  { selector: '.pass', style: { 'border-color': '#1d9a3a', 'border-width': 4 } },
  { selector: '.fail', style: { 'border-color': '#d0262d', 'border-width': 5, 'background-color': '#fde0e0' } },
  { selector: '.hit', style: { 'border-color': '#e0399a', 'border-width': 4 } },
  { selector: '.hit-drop', style: { 'border-color': '#d0262d', 'border-width': 6, 'background-color': '#fde0e0' } },
  {
    selector: 'edge.trace',
    style: {
      width: 4,
      'line-color': '#e0399a',
      'target-arrow-shape': 'triangle',
      'target-arrow-color': '#e0399a',
      'curve-style': 'unbundled-bezier',
      'control-point-distances': [25],
      label: 'data(label)',
      color: '#a3155f',
      'font-size': 11,
      'font-weight': 'bold',
      'z-index': 20,
    },
  },
  { selector: 'edge.trace.dnat', style: { 'line-style': 'dashed', 'line-dash-pattern': [8, 4] } },
  { selector: 'edge.trace.drop', style: { 'line-color': '#d0262d', 'target-arrow-color': '#d0262d', color: '#d0262d' } },
  { selector: ':selected', style: { 'overlay-color': '#2f6fb5', 'overlay-opacity': 0.15 } },
];

const cy: Core = cytoscape({ container: $('cy'), style, minZoom: 0.2, maxZoom: 3 });
let graph: UiGraph | undefined;
let shape = '';
let laying: Promise<void> = Promise.resolve();

function layout(): Promise<void> {
  const l = cy
    .elements()
    .not('.peer, .trace')
    .layout({
      name: 'elk',
      fit: true,
      padding: 24,
      nodeLayoutOptions: (n: NodeSingular) => (n.isParent() ? { 'elk.padding': '[top=60,left=14,bottom=14,right=14]', 'elk.spacing.nodeNode': 34 } : {}),
      elk: {
        algorithm: 'layered',
        'elk.direction': 'DOWN',
        'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
        'elk.layered.spacing.nodeNodeBetweenLayers': 38,
        // Wide between node boxes: the tunnel between them and its label go there.
        'elk.spacing.nodeNode': 80,
        'elk.layered.nodePlacement.strategy': 'NETWORK_SIMPLEX',
        'elk.layered.considerModelOrder.strategy': 'NODES_AND_EDGES',
        'elk.edgeLabels.inline': true,
      },
    } as cytoscape.LayoutOptions);
  const done = l.promiseOn('layoutstop').then(() => undefined);
  l.run();
  return done;
}

/** Applies a new graph: adds, removes and relabels elements; lays out again when elements came or went. */
function apply(g: UiGraph): Promise<void> {
  graph = g;
  const els = elements(g);
  const ids = new Set(els.map((e) => e.data.id!));
  cy.batch(() => {
    cy.elements()
      .not('.trace')
      .filter((e) => !ids.has(e.id()))
      .remove();
    for (const e of els) {
      const have = cy.getElementById(e.data.id!);
      if (have.empty()) cy.add(e);
      else have.data(e.data);
    }
  });
  const next = [...ids].sort().join('|');
  const changed = next !== shape;
  shape = next;
  $('lab').textContent = `lab ${g.lab}`;
  $('summary').textContent =
    `${g.backend} · ${g.nodes.length} nodes · ${g.pods.length} pods · ${g.services.length} Services${g.servicesNote ? ` · ${g.servicesNote}` : ''}`;
  fillEndpoints(g);
  laying = changed ? laying.then(layout) : laying;
  return laying;
}

function fillEndpoints(g: UiGraph): void {
  const opts = [
    ...g.pods.map((p) => [p.name, `pod ${p.name} ${p.ip}`]),
    ...g.nodes.map((n) => [n.name, `node ${n.name} ${n.ip}`]),
    ...g.services.map((s) => [`${s.namespace}/${s.name}`, `Service ${s.namespace}/${s.name} ${s.clusterIP ?? ''}`]),
    ['outside', `outside ${g.outside.ip}`],
  ];
  for (const [id, pick] of [
    ['src', 0],
    ['dst', 1],
  ] as const) {
    const sel = $<HTMLSelectElement>(id);
    const keep = sel.value;
    sel.innerHTML = opts.map(([v, t]) => `<option value="${esc(v)}">${esc(t)}</option>`).join('');
    const fallback = id === 'dst' ? (g.pods.find((p) => p.node !== g.pods[0]?.node)?.name ?? opts[pick]?.[0]) : opts[pick]?.[0];
    sel.value = opts.some(([v]) => v === keep) ? keep : (fallback ?? '');
  }
}

const rows = (r: [string, unknown][]) => `<table>${r.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v as string}</td></tr>`).join('')}</table>`;

interface AgentView {
  backend?: string;
  ownLease?: { subnet: string };
  remoteLeases?: { subnet: string; publicIP: string }[];
  drift?: string[];
  store?: { healthy: boolean };
  lastReconcile?: { at: string; changes: string[]; error?: string };
  datapath?: { attached: boolean; counters: Record<string, number> };
  services?: { services?: number; endpoints?: number; chains?: number; lastSync?: { ms: number } };
  error?: string;
}

async function showDetails(kind: string, ref: string): Promise<void> {
  const out = $('details-out');
  out.innerHTML = '<p class="hint">loading…</p>';
  const g = graph;
  if (!g) return;
  if (kind === 'svc') {
    const s = g.services.find((x) => x.key === ref)!;
    out.innerHTML =
      `<h3>Service ${esc(s.namespace)}/${esc(s.name)}</h3>` +
      rows([
        ['type', esc(s.type)],
        ['ClusterIP', esc(s.clusterIP ?? '-')],
        ['ports', esc(s.ports)],
        ['endpoints', s.endpoints.map((e) => `${esc(e.ip)}${e.pod ? ` (${esc(e.pod)})` : ''}${e.ready ? '' : ' not ready'}`).join('<br>') || 'none'],
      ]) +
      '<p class="hint">Each node\'s agent programs nftables DNAT from the ClusterIP to these endpoints.</p>';
    return;
  }
  if (kind === 'infra') {
    const text: Record<string, string> = {
      underlay: `The physical network of the lab: a bridge (${g.underlay.bridge}) every node's eth0 plugs into, ${g.underlay.cidr}. Pod packets between nodes cross it ${g.backend === 'vxlan' ? 'inside VXLAN (UDP 8472)' : g.backend === 'udp' ? 'inside UDP datagrams (8285)' : g.backend === 'host-gw' ? 'unencapsulated, routed via the other node' : 'as macvlan frames'}.`,
      outside: `Stands for the internet: ${g.outside.gateway} is every node's default gateway, ${g.outside.ip} a server out there. Pods reach it with their source masqueraded to the node IP.`,
      etcd: `The cluster store: each agent's subnet lease (flannel's /coreos.com/network/subnets) and the Services and pods (/weft).`,
      monitoring: 'Prometheus, scraping every agent on :9402.',
    };
    out.innerHTML = `<p>${esc(text[ref] ?? ref)}</p>`;
    return;
  }
  const url = kind === 'pod' ? `/api/pod/${ref}` : `/api/node/${ref}`;
  const r = await fetch(url);
  const d = (await r.json()) as Record<string, unknown>;
  if (!r.ok) {
    out.innerHTML = `<p class="bad">${esc(d.error)}</p>`;
    return;
  }
  const routeRows = (d.routes as { dst: string; via?: string; dev?: string; onlink: boolean; type?: string }[])
    .map(
      (x) =>
        `<tr><td class="mono">${esc(x.dst)}</td><td class="mono">${
          x.type && !x.dev ? esc(x.type) : `${x.via ? `via ${esc(x.via)} ` : ''}dev ${esc(x.dev ?? '-')}${x.onlink ? ' onlink' : ''}`
        }</td></tr>`,
    )
    .join('');
  const addrText = (d.addrs as { dev: string; address: string; prefix: number; family: number }[])
    .filter((a) => a.family === 4 && a.dev !== 'lo')
    .map((a) => `${esc(a.dev)} ${esc(a.address)}/${a.prefix}`)
    .join('<br>');
  if (kind === 'pod') {
    const p = d.pod as { name: string; node: string; ip: string; namespace?: string; containers: string[] };
    const rec = d.record as { labels?: Record<string, string> } | undefined;
    out.innerHTML =
      `<h3>pod ${esc(p.name)}</h3>` +
      rows([
        ['namespace', esc(p.namespace ?? 'default')],
        ['node', esc(p.node)],
        ['addresses', addrText],
        ['containers', esc(p.containers.join(', '))],
        [
          'labels',
          esc(
            Object.entries(rec?.labels ?? {})
              .map(([k, v]) => `${k}=${v}`)
              .join(', ') || '-',
          ),
        ],
      ]) +
      `<h4>routes (in the pod's namespace)</h4><table>${routeRows}</table>`;
    return;
  }
  const a = d.agent as { status?: AgentView; note?: string } & AgentView;
  const st = a.status;
  const c = st?.datapath?.counters;
  const agentRows: [string, unknown][] = st
    ? [
        ['agent', `${esc(st.backend)} backend, etcd ${st.store?.healthy ? '<span class="ok">reachable</span>' : '<span class="bad">UNREACHABLE</span>'}`],
        ['own lease', esc(st.ownLease?.subnet ?? 'none')],
        ['remote leases', (st.remoteLeases ?? []).map((l) => `${esc(l.subnet)} → ${esc(l.publicIP)}`).join('<br>') || 'none'],
        [
          'drift',
          st.drift?.length
            ? `<span class="bad">${st.drift.map(esc).join('<br>')}</span>`
            : '<span class="ok">none: the kernel matches what the agent wants</span>',
        ],
        [
          'last reconcile',
          st.lastReconcile
            ? `${esc(st.lastReconcile.at)}${st.lastReconcile.error ? ` <span class="bad">${esc(st.lastReconcile.error)}</span>` : `, ${st.lastReconcile.changes.length} change(s)`}`
            : '-',
        ],
        ...(st.services
          ? ([['service proxy', `${st.services.services ?? 0} Services, ${st.services.endpoints ?? 0} endpoints, ${st.services.chains ?? 0} chains`]] as [
              string,
              unknown,
            ][])
          : []),
        ...(c
          ? ([
              [
                'packet loop',
                `${st.datapath!.attached ? 'attached' : '<span class="bad">NOT attached</span>'}; ${Object.entries(c)
                  .map(([k, v]) => `${esc(k)} ${v}`)
                  .join(', ')}`,
              ],
            ] as [string, unknown][])
          : []),
        ...(a.note ? ([['note', esc(a.note)]] as [string, unknown][]) : []),
      ]
    : [['agent', `<span class="bad">${esc(a.error)}</span>`]];
  out.innerHTML =
    `<h3>node ${esc(ref)}</h3>` + rows([['addresses', addrText], ...agentRows]) + `<h4>routes (main table, node namespace)</h4><table>${routeRows}</table>`;
}

cy.on('tap', 'node', (ev) => {
  const n = ev.target as NodeSingular;
  const kind = n.data('kind') as string;
  const ref = n.data('ref') as string;
  const asNode = ['node', 'nic', 'bridge', 'tunnel'].includes(kind) ? 'node' : kind;
  showDetails(asNode, ref).catch((e: Error) => ($('details-out').innerHTML = `<p class="bad">${esc(e.message)}</p>`));
});

/** The element a hop happened at: its device when drawn, else its pod, node or the lab's infrastructure. */
function hopElement(h: TraceHop, prev: string | undefined): string | undefined {
  const { kind, name } = h.at;
  if (kind === 'pod') return podId(name);
  if (h.kind === 'underlay') return 'underlay';
  if (kind === 'underlay' || kind === 'outside' || kind === 'etcd') return name === 'outside' || kind === 'outside' ? 'outside' : kind;
  if (h.dev && !cy.getElementById(devId(name, h.dev)).empty()) return devId(name, h.dev);
  if (prev?.startsWith(`dev:${name}:`)) return prev;
  const n = graph?.nodes.find((x) => x.name === name);
  if ((h.kind === 'veth' || h.kind === 'bridge') && n?.bridge) return devId(name, n.bridge.name);
  if ((h.kind === 'veth' || h.kind === 'route') && graph?.cniMode === 'routed' && n) return devId(name, ROUTED);
  if ((h.kind === 'encap' || h.kind === 'decap') && n?.tunnel) return devId(name, n.tunnel.name);
  return devId(name, 'eth0');
}

function clearTrace(): void {
  cy.elements('.trace').remove();
  cy.elements().removeClass('hit hit-drop');
}

function drawTrace(r: TraceResult): void {
  clearTrace();
  let prev: string | undefined;
  let step = 0;
  r.hops.forEach((h, i) => {
    const at = hopElement(h, prev);
    if (!at || cy.getElementById(at).empty()) return;
    const dropped = r.outcome === 'dropped' && i === r.hops.length - 1;
    cy.getElementById(at).addClass(dropped ? 'hit-drop' : 'hit');
    if (prev && prev !== at) {
      step++;
      // Labelled with the hop's number in the list beside the picture.
      cy.add({ group: 'edges', data: { id: `trace:${step}`, source: prev, target: at, label: String(i + 1) }, classes: `trace${dropped ? ' drop' : ''}` });
    }
    // The Service's DNAT: its ClusterIP was rewritten here to the endpoint the path goes on to.
    const svc = cy.getElementById(`svc:${r.dst.name ?? ''}`);
    if (r.dst.kind === 'service' && h.verdict?.action === 'dnat' && svc.nonempty() && !svc.hasClass('hit')) {
      svc.addClass('hit');
      cy.add({ group: 'edges', data: { id: `trace:dnat:${i}`, source: at, target: svc.id(), label: `${i + 1} DNAT` }, classes: 'trace dnat' });
    }
    prev = at;
  });
  const verdict = (h: TraceHop) =>
    h.verdict
      ? ` <b class="${h.verdict.action === 'drop' ? 'bad' : ''}">${esc(h.verdict.action)}</b>${h.verdict.rule ? ` <code>${esc(h.verdict.rule)}</code>` : ''}`
      : '';
  const head =
    r.outcome === 'delivered'
      ? `<p class="ok">delivered in ${Math.round(r.ms)} ms</p>`
      : `<p class="bad">${esc(r.outcome)}${r.droppedBy ? `: ${esc(r.droppedBy)}` : ''}</p>`;
  $('trace-out').innerHTML =
    head +
    '<p class="dim">The numbers on the picture are the hops below; observed hops come from the kernel (nft trace, conntrack, route lookups).</p>' +
    (r.endpoint ? `<p>Service DNAT chose endpoint <b>${esc(r.endpoint.ip)}${r.endpoint.pod ? ` (${esc(r.endpoint.pod)})` : ''}</b></p>` : '') +
    `<ol class="hops">${r.hops
      .map(
        (h) =>
          `<li><b>${esc(h.where)}</b>${h.dev ? ` ${esc(h.dev)}` : ''}: ${esc(h.summary)}${verdict(h)}<span class="tag ${h.observed ? 'obs' : 'inf'}" title="${esc(h.source)}">${h.observed ? 'observed' : 'inferred'}</span></li>`,
      )
      .join('')}</ol>`;
}

async function runTrace(src: string, dst: string, proto = 'tcp', port?: number): Promise<TraceResult> {
  const btn = $<HTMLButtonElement>('go');
  btn.disabled = true;
  $<HTMLSelectElement>('src').value = src;
  $<HTMLSelectElement>('dst').value = dst;
  $('trace-out').innerHTML = `<p class="hint">sending a probe from ${esc(src)} to ${esc(dst)}…</p>`;
  try {
    const r = await fetch('/api/trace', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ src, dst, proto, ...(port && { port }) }),
    });
    const d = (await r.json()) as TraceResult & { error?: string };
    if (!r.ok) throw new Error(d.error ?? `HTTP ${r.status}`);
    drawTrace(d);
    return d;
  } catch (e) {
    $('trace-out').innerHTML = `<p class="bad">${esc((e as Error).message)}</p>`;
    throw e;
  } finally {
    btn.disabled = false;
  }
}

$('go').onclick = () => {
  const port = Number($<HTMLInputElement>('port').value) || undefined;
  runTrace($<HTMLSelectElement>('src').value, $<HTMLSelectElement>('dst').value, $<HTMLSelectElement>('proto').value, port).catch(() => undefined);
};
$('clear').onclick = () => {
  clearTrace();
  $('trace-out').innerHTML = '';
};

function colourVerify(results: CheckResult[]): void {
  cy.elements().removeClass('pass fail');
  const g = graph;
  if (!g) return;
  const ids = (text: string): string[] => {
    const name = text.split(' ')[0] ?? '';
    if (g.pods.some((p) => p.name === name)) return [podId(name)];
    if (g.nodes.some((n) => n.name === name)) return [devId(name, 'eth0')];
    const svc = g.services.find((s) => s.name === name || `${s.namespace}/${s.name}` === name);
    return svc ? [`svc:${svc.key}`] : [];
  };
  const fails = new Set<string>();
  const passes = new Set<string>();
  for (const r of results.filter((x) => !x.skipped)) for (const id of [...ids(r.from), ...ids(r.to)]) (r.ok ? passes : fails).add(id);
  for (const id of passes) if (!fails.has(id)) cy.getElementById(id).addClass('pass');
  for (const id of fails) cy.getElementById(id).addClass('fail');
}

async function runVerify(): Promise<CheckResult[]> {
  const btn = $<HTMLButtonElement>('run-verify');
  btn.disabled = true;
  $('verify-out').innerHTML = '<p class="hint">running verify (pod → pod, node → pod, Services, DNS)…</p>';
  try {
    const r = await fetch('/api/verify', { method: 'POST', headers: { 'content-type': 'application/json' } });
    const d = (await r.json()) as { results: CheckResult[]; error?: string };
    if (!r.ok) throw new Error(d.error ?? `HTTP ${r.status}`);
    colourVerify(d.results);
    const failed = d.results.filter((x) => !x.ok);
    const skipped = d.results.filter((x) => x.skipped).length;
    const groups = [...new Set(d.results.map((x) => x.group))];
    $('verify-out').innerHTML =
      `<p class="${failed.length ? 'bad' : 'ok'}">${d.results.length - failed.length - skipped} passed, ${failed.length} failed${skipped ? `, ${skipped} not applicable` : ''}</p>` +
      `<table>${groups
        .map((gr) => {
          const of = d.results.filter((x) => x.group === gr);
          const bad = of.filter((x) => !x.ok && !x.skipped);
          return `<tr><td>${bad.length ? '<span class="bad">✗</span>' : '<span class="ok">✓</span>'}</td><td>${esc(gr)}</td><td>${of.length - bad.length}/${of.length}</td></tr>${bad
            .map((x) => `<tr><td></td><td colspan="2" class="bad">${esc(x.check)} ${esc(x.from)} → ${esc(x.to)}: ${esc(x.evidence)}</td></tr>`)
            .join('')}`;
        })
        .join('')}</table>`;
    return d.results;
  } catch (e) {
    $('verify-out').innerHTML = `<p class="bad">${esc((e as Error).message)}</p>`;
    throw e;
  } finally {
    btn.disabled = false;
  }
}

$('run-verify').onclick = () => void runVerify().catch(() => undefined);

interface Series {
  title: string;
  error?: string;
  data?: { result: { metric: Record<string, string>; values: [number, string][] }[] };
}

function sparkline(values: number[]): string {
  const w = 360;
  const h = 40;
  const max = Math.max(...values, 1e-9);
  const pts = values.map((v, i) => `${((i / Math.max(1, values.length - 1)) * w).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(' ');
  return `<svg class="spark" width="${w}" height="${h}"><rect width="${w}" height="${h}" fill="#fff" stroke="#e1e6ec"/><polyline points="${pts}" fill="none" stroke="#2f6fb5" stroke-width="1.5"/></svg>`;
}

async function refreshMetrics(): Promise<void> {
  const d = (await (await fetch('/api/metrics')).json()) as { monitoring: boolean; note?: string; at?: string; series?: Series[]; error?: string };
  const out = $('metrics-out');
  if (!d.monitoring) {
    out.innerHTML = `<p class="hint">${esc(d.note ?? d.error)}</p>`;
    return;
  }
  out.innerHTML =
    `<p class="dim">from Prometheus at ${esc(d.at)}, last 5 minutes</p>` +
    (d.series ?? [])
      .map((s) => {
        if (s.error) return `<div>${esc(s.title)}: <span class="bad">${esc(s.error)}</span></div>`;
        const res = s.data?.result ?? [];
        if (!res.length) return `<div>${esc(s.title)}: <span class="dim">no samples yet</span></div>`;
        return res
          .slice(0, 3)
          .map((x) => {
            const values = x.values.map(([, v]) => Number(v)).filter(Number.isFinite);
            if (!values.length) return `<div>${esc(s.title)}: <span class="dim">no samples yet</span></div>`;
            const who = x.metric.node ?? x.metric.instance ?? '';
            return `<div>${esc(s.title)}${who ? ` · ${esc(who)}` : ''}: <b>${(values.at(-1) ?? 0).toPrecision(3)}</b>${sparkline(values)}</div>`;
          })
          .join('');
      })
      .join('');
}

function connect(): void {
  const es = new EventSource('/api/events');
  const live = $('live');
  es.addEventListener('open', () => {
    live.textContent = 'live';
    live.className = 'on';
  });
  es.addEventListener('error', () => {
    live.textContent = 'reconnecting…';
    live.className = '';
  });
  es.addEventListener('graph', (ev: MessageEvent<string>) => {
    const g = JSON.parse(ev.data) as UiGraph | { error: string };
    if ('error' in g) {
      $('summary').textContent = g.error;
      return;
    }
    void apply(g);
  });
  es.addEventListener('verify', (ev: MessageEvent<string>) => {
    $<HTMLButtonElement>('run-verify').disabled = (JSON.parse(ev.data) as { running: boolean }).running;
  });
}

connect();
void refreshMetrics().catch(() => undefined);
setInterval(() => void refreshMetrics().catch(() => undefined), 10_000);

declare global {
  interface Window {
    weft: { cy: Core; graph: () => UiGraph | undefined; settled: () => Promise<void>; trace: typeof runTrace; verify: typeof runVerify };
  }
}
window.weft = { cy, graph: () => graph, settled: () => laying, trace: runTrace, verify: runVerify };
