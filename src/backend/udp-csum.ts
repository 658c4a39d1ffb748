/**
 * The Internet checksum's ones'-complement sum in WebAssembly SIMD, over a memory of its own: the
 * udp packet loop reads packets into that memory, so the sums of its TCP segments (the one job
 * on the data path that reads every byte, and that the kernel cannot do for it: see udp-packet.ts)
 * run at memory speed instead of JS's ~5 GB/s.
 *
 * The module is built here from its bytes (a few dozen instructions; no toolchain at build time).
 * It holds one function, as WAT:
 *
 *   (func $sum (param $i i32) (param $e i32) (result i32) (local $a v128) (local $b v128) (local $s i64)
 *     ;; 32 bytes per turn: eight little-endian 16-bit words each into $a and $b (four u32 lanes)
 *     loop while $i + 32 <= $e:
 *       $a += i32x4.extadd_pairwise_i16x8_u(v128.load $i); $b += ... (v128.load offset=16 $i); $i += 32
 *     $a += $b
 *     loop while $i + 16 <= $e: $a += i32x4.extadd_pairwise_i16x8_u(v128.load $i); $i += 16
 *     $s = lane0 + lane1 + lane2 + lane3 of $a   (as i64)
 *     loop while $i + 2 <= $e: $s += i64.load16_u $i; $i += 2
 *     if $i < $e: $s += i64.load8_u $i           (a lone last byte is the low byte of a LE word)
 *     fold $s to 16 bits three times; return it byte-swapped (network order)
 *
 * A lane gains < 2^17 per turn and the memory is 128 KiB (< 2^13 turns), so no lane overflows.
 * Summing little-endian words gives the byte-swapped network-order sum (RFC 1071: the sum is
 * byte-order independent), hence the final swap.
 */

const PAGES = 2;
/** Bytes of the module's memory (fixed: it never grows, so Buffers over it stay valid). */
export const CSUM_MEMORY_BYTES = PAGES * 65536;

const I32 = 0x7f;
const I64 = 0x7e;
const V128 = 0x7b;
const [BLOCK, LOOP, IF, END, BR, BR_IF] = [0x02, 0x03, 0x04, 0x0b, 0x0c, 0x0d];
const VOID = 0x40;
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const i32 = (v: number) => [0x41, v]; // small non-negative constants only (one LEB byte, < 64)
const I32_ADD = 0x6a;
const I32_GT_U = 0x4b;
const I32_LT_U = 0x49;
const I64_ADD = 0x7c;
const I64_AND = 0x83;
const I64_SHR_U = 0x88;
const I64_SHL = 0x86;
const I64_OR = 0x84;
const I64_EXTEND_I32_U = 0xad;
const I32_WRAP_I64 = 0xa7;
const i64 = (v: number) => [0x42, ...sleb(v)];
const I64_LOAD16_U = [0x33, 1, 0];
const I64_LOAD8_U = [0x31, 0, 0];
const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const V128_LOAD = (offset: number) => simd(0x00, 0, offset);
const EXTADD_U = simd(0x7f); // i32x4.extadd_pairwise_i16x8_u
const I32X4_ADD = simd(0xae);
const lane = (n: number) => simd(0x1b, n); // i32x4.extract_lane

function uleb(v: number): number[] {
  const out: number[] = [];
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

function sleb(v: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const name = (s: string) => [...uleb(s.length), ...Buffer.from(s, 'ascii')];

/** Instructions and their immediates, flattened into bytes. */
const ops = (...parts: (number | number[])[]): number[] => parts.flat();

const [P_I, P_E, L_A, L_B, L_S] = [0, 1, 2, 3, 4];
/** `while ($i + step <= $e) { body; $i += step }` */
const whileRoom = (step: number, body: number[]) =>
  ops(BLOCK, VOID, LOOP, VOID, get(P_I), i32(step), I32_ADD, get(P_E), I32_GT_U, BR_IF, 1, body, get(P_I), i32(step), I32_ADD, set(P_I), BR, 0, END, END);
const addLoad = (acc: number, offset: number) => ops(get(acc), get(P_I), V128_LOAD(offset), EXTADD_U, I32X4_ADD, set(acc));
const laneI64 = (n: number) => ops(get(L_A), lane(n), I64_EXTEND_I32_U);
const fold = ops(get(L_S), i64(0xffff), I64_AND, get(L_S), i64(16), I64_SHR_U, I64_ADD, set(L_S));
const swap = ops(get(L_S), i64(0xff), I64_AND, i64(8), I64_SHL, get(L_S), i64(8), I64_SHR_U, I64_OR);

const body = ops(
  whileRoom(32, ops(addLoad(L_A, 0), addLoad(L_B, 16))),
  ops(get(L_A), get(L_B), I32X4_ADD, set(L_A)),
  whileRoom(16, addLoad(L_A, 0)),
  ops(laneI64(0), laneI64(1), I64_ADD, laneI64(2), I64_ADD, laneI64(3), I64_ADD, set(L_S)),
  whileRoom(2, ops(get(L_S), get(P_I), I64_LOAD16_U, I64_ADD, set(L_S))),
  ops(get(P_I), get(P_E), I32_LT_U, IF, VOID, get(L_S), get(P_I), I64_LOAD8_U, I64_ADD, set(L_S), END),
  fold,
  fold,
  fold,
  swap,
  I32_WRAP_I64,
  END,
);
/** The function's locals after its two parameters: $a and $b (v128), $s (i64). */
const LOCALS = [
  [2, V128],
  [1, I64],
];
const code = ops(vec(LOCALS), body);
const MAGIC_VERSION = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const EXPORTS = [
  [...name('sum'), 0x00, 0],
  [...name('mem'), 0x02, 0],
];
const MODULE = new Uint8Array(
  ops(
    MAGIC_VERSION,
    section(1, vec([ops(0x60, vec([[I32], [I32]]), vec([[I32]]))])), // type 0: (i32, i32) -> i32
    section(3, vec([[0]])), // function 0 has type 0
    section(5, vec([ops(0x01, uleb(PAGES), uleb(PAGES))])), // one memory, min = max
    section(7, vec(EXPORTS)),
    section(10, vec([ops(uleb(code.length), code)])),
  ),
);

let compiled: WebAssembly.Module | undefined;

/** One instance: a fixed memory (`mem`, a Buffer over all of it) and the sum over a range of it. */
export class Checksummer {
  readonly mem: Buffer;
  /**
   * The ones'-complement sum, folded to 16 bits and not complemented, of mem[start, end) in network
   * byte order: udp-packet.ts's SumFn.
   */
  readonly sum: (start: number, end: number) => number;

  constructor() {
    compiled ??= new WebAssembly.Module(MODULE);
    const e = new WebAssembly.Instance(compiled).exports as { sum: (s: number, e: number) => number; mem: WebAssembly.Memory };
    this.sum = e.sum;
    this.mem = Buffer.from(e.mem.buffer, 0, CSUM_MEMORY_BYTES);
  }
}
