import { nftTx, type NftTx } from '../kernel/nft.js';
import {
  chainComments,
  elementId,
  mapTable,
  PROXY_FAMILY,
  PROXY_TABLE,
  ruleText,
  verdictText,
  type Fragment,
  type MapName,
  type Rule,
  type Verdict,
} from './rules.js';

/** One change to the Services' part of the tables (the fixed part is set up apart, see base.ts). */
export type ProxyOp = { table: string } & (
  | { op: 'addSet'; name: string; timeoutSeconds: number }
  | { op: 'delSet'; name: string }
  | { op: 'addChain'; name: string }
  | { op: 'flushChain'; name: string }
  | { op: 'delChain'; name: string }
  | { op: 'addRule'; chain: string; rule: Rule; comment: string }
  | { op: 'addElement'; map: MapName; key: string[]; value: Verdict }
  | { op: 'delElement'; map: MapName; key: string[] }
);

/**
 * What the Services' part of the tables holds, in the terms a diff compares: chains by their
 * rules' comments (see chainComments), affinity sets by name, map elements by map and key with
 * their verdict as text; all keyed by table too. Built from fragments (what was applied) or read
 * from the kernel.
 */
export interface Shape {
  chains: Map<string, { table: string; name: string; comments: string }>;
  sets: Map<string, { table: string; name: string }>;
  elements: Map<string, { table: string; map: MapName; key: string[]; value: string }>;
}

export const emptyShape = (): Shape => ({ chains: new Map(), sets: new Map(), elements: new Map() });

export const objectId = (table: string, name: string): string => `${table} ${name}`;

/** Adds fragments' chains, sets and elements to `into` (and returns it). */
export function shapeOf(fragments: Iterable<Fragment>, into: Shape = emptyShape()): Shape {
  for (const f of fragments) {
    const table = f.table;
    for (const [name, rules] of f.chains) into.chains.set(objectId(table, name), { table, name, comments: chainComments(rules).join(',') });
    for (const name of f.sets.keys()) into.sets.set(objectId(table, name), { table, name });
    for (const e of f.elements) {
      const t = mapTable(e.map, table);
      into.elements.set(objectId(t, elementId(e)), { table: t, map: e.map, key: e.key, value: verdictText(e.value) });
    }
  }
  return into;
}

/**
 * The ops that turn `old` into what `now` describes, ordered so that every op finds what it
 * needs: new sets and chains first, then the rules of new and changed chains (a changed chain is
 * flushed and refilled, never deleted), then elements (a changed verdict is a delete and an add),
 * and last the chains and sets nothing refers to any more (flushed, then deleted).
 */
export function diff(old: Shape, now: Iterable<Fragment>): ProxyOp[] {
  const sets: ProxyOp[] = [];
  const chains: ProxyOp[] = [];
  const rules: ProxyOp[] = [];
  const delElements: ProxyOp[] = [];
  const addElements: ProxyOp[] = [];
  const wantChains = new Set<string>();
  const wantSets = new Set<string>();
  const wantElements = new Set<string>();
  for (const f of now) {
    const table = f.table;
    for (const [name, timeoutSeconds] of f.sets) {
      const id = objectId(table, name);
      wantSets.add(id);
      if (!old.sets.has(id)) sets.push({ table, op: 'addSet', name, timeoutSeconds });
    }
    for (const [name, chainRules] of f.chains) {
      const id = objectId(table, name);
      wantChains.add(id);
      const comments = chainComments(chainRules);
      const have = old.chains.get(id);
      if (have?.comments === comments.join(',')) continue;
      if (have === undefined) chains.push({ table, op: 'addChain', name });
      else rules.push({ table, op: 'flushChain', name });
      chainRules.forEach((rule, i) => rules.push({ table, op: 'addRule', chain: name, rule, comment: comments[i]! }));
    }
    for (const e of f.elements) {
      const t = mapTable(e.map, table);
      const id = objectId(t, elementId(e));
      wantElements.add(id);
      const have = old.elements.get(id);
      const value = verdictText(e.value);
      if (have?.value === value) continue;
      if (have) delElements.push({ table: t, op: 'delElement', map: e.map, key: e.key });
      addElements.push({ table: t, op: 'addElement', map: e.map, key: e.key, value: e.value });
    }
  }
  for (const [id, e] of old.elements) if (!wantElements.has(id)) delElements.push({ table: e.table, op: 'delElement', map: e.map, key: e.key });
  const gone = [...old.chains].filter(([id]) => !wantChains.has(id)).map(([, c]) => c);
  const goneSets = [...old.sets].filter(([id]) => !wantSets.has(id)).map(([, c]) => c);
  return [
    ...sets,
    ...chains,
    ...rules,
    ...delElements,
    ...addElements,
    ...gone.map((c): ProxyOp => ({ table: c.table, op: 'flushChain', name: c.name })),
    ...gone.map((c): ProxyOp => ({ table: c.table, op: 'delChain', name: c.name })),
    ...goneSets.map((c): ProxyOp => ({ table: c.table, op: 'delSet', name: c.name })),
  ];
}

/** The ops as an nft transaction (for printing, and `nft -f` where netlink is not wanted). */
export function toNftTx(ops: ProxyOp[]): NftTx {
  const tx = nftTx(PROXY_FAMILY, PROXY_TABLE);
  for (const o of ops) {
    switch (o.op) {
      case 'addSet':
        tx.add({ table: o.table, type: 'set', name: o.name, key: 'ipv4_addr', flags: ['dynamic', 'timeout'], timeout: `${o.timeoutSeconds}s` });
        break;
      case 'delSet':
        tx.delete({ table: o.table, type: 'set', name: o.name, key: 'ipv4_addr' });
        break;
      case 'addChain':
        tx.add({ table: o.table, type: 'chain', name: o.name });
        break;
      case 'flushChain':
        tx.flush({ table: o.table, type: 'chain', name: o.name });
        break;
      case 'delChain':
        tx.delete({ table: o.table, type: 'chain', name: o.name });
        break;
      case 'addRule':
        tx.add({ table: o.table, type: 'rule', chain: o.chain, rule: ruleText(o.rule), comment: o.comment });
        break;
      case 'addElement':
        tx.add({ table: o.table, type: 'element', set: o.map, key: o.key, value: verdictText(o.value) });
        break;
      case 'delElement':
        tx.delete({ table: o.table, type: 'element', set: o.map, key: o.key });
        break;
    }
  }
  return tx;
}
