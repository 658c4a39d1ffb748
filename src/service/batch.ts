import { MAX_WRITE_OPS, type Store, type WriteOp } from '../store/store.js';

/** Requests in flight at once for bulk reads and writes: enough to keep etcd busy, few enough not to swamp it. */
const PARALLEL = 64;
/** Operations per transaction, below etcd's limit of MAX_WRITE_OPS. */
export const BATCH = Math.min(100, MAX_WRITE_OPS);
/** Transactions in flight at once: etcd commits concurrent ones together. */
const PARALLEL_TXNS = 32;

/** Runs `fn` over `items`, at most `parallel` at a time; results in input order. */
export async function mapLimit<T, R>(items: T[], fn: (item: T, index: number) => Promise<R>, parallel = PARALLEL): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));
  return out;
}

export function chunks<T>(items: T[], size = BATCH): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The values of `keys`, BATCH to a request, in the order asked. */
export async function readEach(store: Store, keys: string[]): Promise<(string | undefined)[]> {
  const parts = await mapLimit(chunks(keys), async (part) => (await store.getMany(part)).map((kv) => kv?.value), PARALLEL_TXNS);
  return parts.flat();
}

/** Unconditional writes, BATCH to a transaction (one disk sync each instead of one per key). */
export async function writeAll(store: Store, ops: WriteOp[]): Promise<void> {
  await mapLimit(chunks(ops), (part) => store.writeMany(part), PARALLEL_TXNS);
}

/**
 * Creates each key that is absent, BATCH to a transaction; a transaction that meets a present key
 * is retried key by key. Says for each entry whether this call created it.
 */
export async function createEach(store: Store, entries: { key: string; value: string }[]): Promise<boolean[]> {
  const parts = await mapLimit(
    chunks(entries),
    async (part) => {
      if ((await store.writeMany(part.map((e) => ({ type: 'create', ...e })))) !== false) return part.map(() => true);
      return mapLimit(part, async (e) => (await store.createIfAbsent(e.key, e.value)) !== false);
    },
    PARALLEL_TXNS,
  );
  return parts.flat();
}
