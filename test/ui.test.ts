import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { listNetns } from '../src/kernel/netns.js';
import type { LabState } from '../src/lab/state.js';
import { Topology } from '../src/topo/topology.js';
import { WEFT, weft } from './lab-cli.js';

// The web view in a real browser (Debian's chromium, headless) against a real 2-node lab.
// WEFT_UI_SCREENSHOT=docs/ui.png also copies the screenshot there. window.weft is the page's (src/ui/page/app.ts).
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let topo: Topology;
let lab: string;
let ui: ChildProcess;
let url: string;
let browser: BrowserContext;
let page: Page;

const state = () => JSON.parse(weft('lab', 'status', '--name', lab, '--json').stdout) as LabState;

/** The ids of what the page has drawn, once its layout has settled. */
const drawn = () =>
  page.evaluate(async () => {
    await window.weft.settled();
    return window.weft.cy.nodes().map((n) => ({ id: n.id(), label: String(n.data('label') ?? ''), visible: n.visible(), w: n.renderedWidth() }));
  });

before(async () => {
  topo = await Topology.create();
  lab = topo.id;
  const up = weft('lab', 'up', '--name', lab, '--nodes', '2', '--pods-per-node', '2');
  assert.equal(up.code, 0, up.out);
  ui = spawn(process.execPath, [WEFT, 'ui', '--name', lab, '--listen', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  url = await new Promise<string>((resolve, reject) => {
    let text = '';
    ui.stdout!.on('data', (d: Buffer) => {
      text += String(d);
      // --json prints one object; it is complete when it parses.
      try {
        resolve((JSON.parse(text) as { url: string }).url);
      } catch {
        return;
      }
    });
    ui.once('exit', (code) => reject(new Error(`weft ui exited with ${code}`)));
  });
  const profile = join(topo.dir, 'chromium');
  mkdirSync(profile, { recursive: true });
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1600, height: 1000 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(url);
  await page.waitForFunction(() => window.weft?.graph() !== undefined, undefined, { timeout: 10_000 });
});

after(async () => {
  await browser?.close();
  if (ui && ui.exitCode === null) {
    const exited = new Promise((r) => ui.once('exit', r));
    ui.kill('SIGTERM');
    await exited;
  }
  weft('lab', 'down', '--name', lab);
  await topo.destroy();
  assert.deepEqual(
    listNetns().filter((n) => n.includes(lab)),
    [],
    'lab down left namespaces',
  );
});

test('the page draws every node with its eth0, cni0 and flannel.1, every pod with its IP, and the Service echo', async () => {
  const s = state();
  const nodes = await drawn();
  const byId = new Map(nodes.map((n) => [n.id, n]));
  for (const n of s.nodes) {
    const box = byId.get(`node:${n.name}`);
    assert.ok(box?.visible, `node ${n.name} drawn`);
    assert.match(box.label, new RegExp(`${n.ip}\npods 10\\.244\\.\\d+\\.0/24`), 'node label: public IP and pod subnet');
    assert.match(byId.get(`dev:${n.name}:eth0`)?.label ?? '', new RegExp(n.ip));
    assert.match(byId.get(`dev:${n.name}:cni0`)?.label ?? '', /cni0 bridge\n10\.244\.\d+\.1\/24/);
    assert.match(byId.get(`dev:${n.name}:flannel.1`)?.label ?? '', /VXLAN VNI 1/);
  }
  for (const p of s.pods) assert.match(byId.get(`pod:${p.name}`)?.label ?? '', new RegExp(`eth0 ${p.ip.replace(/\./g, '\\.')}\napp=echo`), `pod ${p.name}`);
  assert.match(byId.get('svc:default/echo')?.label ?? '', /ClusterIP 10\.\d+\.\d+\.\d+/);
  for (const id of ['underlay', 'outside', 'etcd']) assert.ok(byId.get(id)?.visible, `${id} drawn`);
  assert.ok(
    nodes.every((n) => n.w > 20),
    'every element has a size on screen',
  );
  const edges = await page.evaluate(() => window.weft.cy.edges('.peer').map((e) => String(e.data('label'))));
  assert.deepEqual(edges, ['VXLAN tunnel, VNI 1\nUDP 8472 over the underlay']);
});

test('lab pod add and lab pod rm show on the page without a reload, within two seconds', async () => {
  const add = weft('lab', 'pod', 'add', 'late', '--node', 'node2', '--name', lab, '--json');
  assert.equal(add.code, 0, add.out);
  const ip = (JSON.parse(add.stdout) as { ip: string }).ip;
  const started = performance.now();
  await page.waitForFunction((want) => String(window.weft.cy.getElementById('pod:late').data('label') ?? '').includes(want), ip, { timeout: 2000 });
  const ms = performance.now() - started;
  const parent = await page.evaluate(() => String(window.weft.cy.getElementById('pod:late').data('parent')));
  assert.equal(parent, 'node:node2', 'drawn inside its node');
  const rm = weft('lab', 'pod', 'rm', 'late', '--name', lab);
  assert.equal(rm.code, 0, rm.out);
  await page.waitForFunction(() => window.weft.cy.getElementById('pod:late').empty(), undefined, { timeout: 2000 });
  console.log(`pod add → drawn in ${ms.toFixed(0)} ms after the command returned`);
});

test('a Service applied and a node added show on the page within two seconds; removed, they go', async () => {
  const file = join(topo.dir, 'svc.yaml');
  writeFileSync(file, 'apiVersion: v1\nkind: Service\nmetadata: {name: shown}\nspec:\n  selector: {app: echo}\n  ports: [{port: 8080, targetPort: 80}]\n');
  const apply = weft('lab', 'apply', '-f', file, '--name', lab);
  assert.equal(apply.code, 0, apply.out);
  let started = performance.now();
  await page.waitForFunction(
    () => /ClusterIP 10\.\S+\n8080\/TCP · 4 endpoints/.test(String(window.weft.cy.getElementById('svc:default/shown').data('label') ?? '')),
    undefined,
    {
      timeout: 2000,
    },
  );
  console.log(`Service applied → drawn with its endpoints in ${(performance.now() - started).toFixed(0)} ms`);
  const del = weft('lab', 'delete', '-f', file, '--name', lab);
  assert.equal(del.code, 0, del.out);
  await page.waitForFunction(() => window.weft.cy.getElementById('svc:default/shown').empty(), undefined, { timeout: 2000 });

  const add = weft('lab', 'node', 'add', 'node3', '--name', lab);
  assert.equal(add.code, 0, add.out);
  started = performance.now();
  await page.waitForFunction(() => /pods 10\.244\.\d+\.0\/24/.test(String(window.weft.cy.getElementById('node:node3').data('label') ?? '')), undefined, {
    timeout: 2000,
  });
  console.log(`node add → drawn in ${(performance.now() - started).toFixed(0)} ms after the command returned`);
  const rm = weft('lab', 'node', 'rm', 'node3', '--name', lab);
  assert.equal(rm.code, 0, rm.out);
  await page.waitForFunction(() => window.weft.cy.getElementById('node:node3').empty(), undefined, { timeout: 2000 });
});

test('a trace picked on the page is drawn hop by hop from the source pod to the destination pod', async () => {
  const s = state();
  const src = s.pods.find((p) => p.node === 'node1')!;
  const dst = s.pods.find((p) => p.node === 'node2')!;
  await page.selectOption('#src', src.name);
  await page.selectOption('#dst', dst.name);
  await page.click('#go');
  await page.waitForSelector('#trace-out .ok, #trace-out .bad', { timeout: 60_000 });
  assert.match((await page.textContent('#trace-out')) ?? '', /delivered/);
  const path = await page.evaluate(() => ({
    steps: window.weft.cy.edges('.trace').map((e) => [e.source().id(), e.target().id()]),
    hit: window.weft.cy.nodes('.hit').map((n) => n.id()),
  }));
  assert.equal(path.steps[0]?.[0], `pod:${src.name}`, 'the path starts at the source pod');
  assert.equal(path.steps.at(-1)?.[1], `pod:${dst.name}`, 'and ends at the destination pod');
  for (const id of ['dev:node1:cni0', 'dev:node1:flannel.1', 'underlay', 'dev:node2:flannel.1']) assert.ok(path.hit.includes(id), `the path crosses ${id}`);
  const shot = join(topo.dir, 'ui.png');
  await page.screenshot({ path: shot });
  if (process.env.WEFT_UI_SCREENSHOT) copyFileSync(shot, process.env.WEFT_UI_SCREENSHOT);
});

test('verify from the page colours every pod passed', async () => {
  await page.click('#run-verify');
  await page.waitForSelector('#verify-out .ok, #verify-out .bad', { timeout: 120_000 });
  const text = (await page.textContent('#verify-out')) ?? '';
  assert.match(text, /\d+ passed, 0 failed/, text);
  const classes = await page.evaluate(() => window.weft.cy.nodes('.pod').map((n) => [n.id(), n.hasClass('pass'), n.hasClass('fail')]));
  for (const [id, pass, fail] of classes) assert.ok(pass && !fail, `${String(id)} coloured passed`);
});

test('the API: node details carry routes and agent status; bad or cross-site requests get 4xx; a non-loopback --listen needs --public', async () => {
  const node = (await (await fetch(`${url}api/node/node1`)).json()) as { routes: { dst: string; dev?: string }[]; agent: { status: { drift: string[] } } };
  assert.ok(node.routes.some((r) => r.dev === 'flannel.1'));
  assert.deepEqual(node.agent.status.drift, []);
  assert.equal((await fetch(`${url}api/node/nope`)).status, 404);
  const json = { 'content-type': 'application/json' };
  assert.equal((await fetch(`${url}api/trace`, { method: 'POST', headers: json, body: '{"src":"pod-1a"}' })).status, 400);
  // What another site's page could send without a preflight, or with its own Origin, is refused.
  assert.equal((await fetch(`${url}api/verify`, { method: 'POST', body: '{}' })).status, 403);
  assert.equal((await fetch(`${url}api/verify`, { method: 'POST', headers: { ...json, origin: 'http://evil.example' } })).status, 403);
  const metrics = (await (await fetch(`${url}api/metrics`)).json()) as { monitoring: boolean; note: string };
  assert.equal(metrics.monitoring, false);
  assert.match(metrics.note, /--monitoring/);
  const r = weft('ui', '--name', lab, '--listen', '0.0.0.0:0');
  assert.equal(r.code, 2, r.out);
  assert.match(r.out, /--public/);
});
