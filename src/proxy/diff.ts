import { nftTx, type NftTx } from '../kernel/nft.js';
import { chainComments, elementId, PROXY_FAMILY, PROXY_TABLE, ruleText, verdictText, type Fragment, type MapName, type Rule, type Verdict } from './rules.js';

/** One change to the service part of the table (the fixed part is set up apart, see base.ts). */
export type ProxyOp =
  | { op: 'addSet'; name: string; timeoutSeconds: number }
  | { op: 'delSet'; name: string }
  | { op: 'addChain'; name: string }
  | { op: 'flushChain'; name: string }
  | { op: 'delChain'; name: string }
  | { op: 'addRule'; chain: string; rule: Rule; comment: string }
  | { op: 'addElement'; map: MapName; key: string[]; value: Verdict }
  | { op: 'delElement'; map: MapName; key: string[] };

/**
 * What the service part of a table holds, in the terms a diff compares: chains by their rules'
 * comments (see chainComments), affinity sets by name, map elements by map and key with their
 * verdict as text. Built from fragments (what was applied) or read from the kernel.
 */
export interface Shape {
  chains: Map<string, string>;
  sets: Set<string>;
  elements: Map<string, { map: MapName; key: string[]; value: string }>;
}

export const emptyShape = (): Shape => ({ chains: new Map(), sets: new Set(), elements: new Map() });

/** Adds a fragment's chains, sets and elements to `into` (and returns it). */
export function shapeOf(fragments: Iterable<Fragment>, into: Shape = emptyShape()): Shape {
  for (const f of fragments) {
    for (const [name, rules] of f.chains) into.chains.set(name, chainComments(rules).join(','));
    for (const name of f.sets.keys()) into.sets.add(name);
    for (const e of f.elements) into.elements.set(elementId(e), { map: e.map, key: e.key, value: verdictText(e.value) });
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
    for (const [name, timeoutSeconds] of f.sets) {
      wantSets.add(name);
      if (!old.sets.has(name)) sets.push({ op: 'addSet', name, timeoutSeconds });
    }
    for (const [name, chainRules] of f.chains) {
      wantChains.add(name);
      const comments = chainComments(chainRules);
      const have = old.chains.get(name);
      if (have === comments.join(',')) continue;
      if (have === undefined) chains.push({ op: 'addChain', name });
      else rules.push({ op: 'flushChain', name });
      chainRules.forEach((rule, i) => rules.push({ op: 'addRule', chain: name, rule, comment: comments[i]! }));
    }
    for (const e of f.elements) {
      const id = elementId(e);
      wantElements.add(id);
      const have = old.elements.get(id);
      const value = verdictText(e.value);
      if (have?.value === value) continue;
      if (have) delElements.push({ op: 'delElement', map: e.map, key: e.key });
      addElements.push({ op: 'addElement', map: e.map, key: e.key, value: e.value });
    }
  }
  for (const [id, e] of old.elements) if (!wantElements.has(id)) delElements.push({ op: 'delElement', map: e.map, key: e.key });
  const gone = [...old.chains.keys()].filter((c) => !wantChains.has(c));
  const goneSets = [...old.sets].filter((s) => !wantSets.has(s));
  return [
    ...sets,
    ...chains,
    ...rules,
    ...delElements,
    ...addElements,
    ...gone.map((name): ProxyOp => ({ op: 'flushChain', name })),
    ...gone.map((name): ProxyOp => ({ op: 'delChain', name })),
    ...goneSets.map((name): ProxyOp => ({ op: 'delSet', name })),
  ];
}

/** The ops as an nft transaction (for printing, and `nft -f` where netlink is not wanted). */
export function toNftTx(ops: ProxyOp[]): NftTx {
  const tx = nftTx(PROXY_FAMILY, PROXY_TABLE);
  for (const o of ops) {
    switch (o.op) {
      case 'addSet':
        tx.add({ type: 'set', name: o.name, key: 'ipv4_addr', flags: ['dynamic', 'timeout'], timeout: `${o.timeoutSeconds}s` });
        break;
      case 'delSet':
        tx.delete({ type: 'set', name: o.name, key: 'ipv4_addr' });
        break;
      case 'addChain':
        tx.add({ type: 'chain', name: o.name });
        break;
      case 'flushChain':
        tx.flush({ type: 'chain', name: o.name });
        break;
      case 'delChain':
        tx.delete({ type: 'chain', name: o.name });
        break;
      case 'addRule':
        tx.add({ type: 'rule', chain: o.chain, rule: ruleText(o.rule), comment: o.comment });
        break;
      case 'addElement':
        tx.add({ type: 'element', set: o.map, key: o.key, value: verdictText(o.value) });
        break;
      case 'delElement':
        tx.delete({ type: 'element', set: o.map, key: o.key });
        break;
    }
  }
  return tx;
}
