import { parseArgs } from 'node:util';
import { UsageError } from './usage.js';

/**
 * The command table's types, the parser over node:util parseArgs that validates every value before a
 * command runs, and the help text, all derived from the one table in main.ts.
 */
export interface OptionSpec {
  /** Long name without the dashes. */
  name: string;
  short?: string;
  /** The value's name in the help (e.g. `N`); an option without one is a flag. */
  value?: string;
  description: string;
  /** Applied when the option is absent, and shown in the help. */
  default?: string;
  /** The value is one of these. */
  choices?: readonly string[];
  /** The value is a comma-separated list of these. */
  listOf?: readonly string[];
  /** The value is a whole number in this range. */
  int?: { min: number; max: number };
  /** The value is a number (may be fractional) at least this. */
  number?: { min: number };
  multiple?: boolean;
  /** Needed in the command's main form (not when a `mode` option is given). */
  required?: boolean;
  /** Shown in the command's line of the top-level usage. */
  brief?: boolean;
  /** A flag that switches the command into another form: it gets its own line in the top-level usage. */
  mode?: string;
  /** Only together with this mode option. */
  with?: string;
  /** Further validation: throws an Error whose message says what is wrong. */
  check?: (value: string) => void;
}

export interface Positional {
  name: string;
  optional?: boolean;
  /** The last positional only: takes every remaining argument (at least one unless optional). */
  variadic?: boolean;
  check?: (value: string) => void;
}

export interface CommandSpec {
  path: string[];
  summary: string;
  /** A paragraph after the synopsis in the command's help. */
  details?: string;
  positionals?: Positional[];
  /** Takes `-- COMMAND ARGS...` (kept verbatim). */
  passthrough?: string;
  options: OptionSpec[];
  /** The exit status (0 done, 1 failed); usage errors throw UsageError. */
  run: (args: Args) => number | Promise<number>;
}

export interface GroupSpec {
  path: string[];
  summary: string;
}

export const HELP: OptionSpec = { name: 'help', short: 'h', description: 'show this help' };
export const JSON_OPTION: OptionSpec = { name: 'json', description: 'print the result as JSON on stdout and nothing else there (progress goes to stderr)' };

type Value = string | boolean | number | string[] | undefined;

/** A command's parsed and validated arguments. */
export class Args {
  constructor(
    readonly command: CommandSpec,
    private readonly values: Record<string, Value>,
    readonly positionals: string[],
    /** What followed `--`, for commands with `passthrough`. */
    readonly rest: string[],
  ) {}

  str(name: string): string | undefined {
    return this.get(name) as string | undefined;
  }

  num(name: string): number | undefined {
    return this.get(name) as number | undefined;
  }

  bool(name: string): boolean {
    return this.get(name) === true;
  }

  list(name: string): string[] {
    return (this.get(name) as string[] | undefined) ?? [];
  }

  private get(name: string): Value {
    if (!this.command.options.some((o) => o.name === name)) throw new Error(`weft ${this.command.path.join(' ')} has no option --${name}`);
    return this.values[name];
  }
}

function convert(o: OptionSpec, text: string): string | number | string[] {
  const flag = `--${o.name}`;
  if (o.choices && !o.choices.includes(text)) throw new UsageError(`${flag} is ${orList(o.choices)}, not "${text}"`);
  if (o.listOf) {
    const items = text
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const bad = items.filter((i) => !o.listOf!.includes(i));
    if (items.length === 0 || bad.length)
      throw new UsageError(`${flag} is a comma-separated list of ${o.listOf.join(', ')}${bad.length ? `, not "${bad.join(',')}"` : ''}`);
    return items;
  }
  if (o.int) {
    const n = Number(text);
    if (text.trim() === '' || !Number.isInteger(n) || n < o.int.min || n > o.int.max) {
      throw new UsageError(`${flag} takes a whole number from ${o.int.min} to ${o.int.max}, not "${text}"`);
    }
    return n;
  }
  if (o.number) {
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || n < o.number.min) throw new UsageError(`${flag} takes a number, at least ${o.number.min}, not "${text}"`);
    return n;
  }
  return text;
}

function checked(check: (value: string) => void, text: string): void {
  try {
    check(text);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

const orList = (xs: readonly string[]) => (xs.length < 2 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`);

export const commandName = (c: { path: string[] }) => ['weft', ...c.path].join(' ');

/** Parses and checks argv (after the command words) for `c`; undefined when it asked for help. */
export function parse(c: CommandSpec, argv: string[]): Args | undefined {
  const dash = c.passthrough ? argv.indexOf('--') : -1;
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const rest = dash < 0 ? [] : argv.slice(dash + 1);
  const options = Object.fromEntries(
    [...c.options, HELP].map(
      (o) => [o.name, { type: o.value ? 'string' : 'boolean', ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) }] as const,
    ),
  );
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: own, options, allowPositionals: true, strict: true });
  } catch (e) {
    const err = e as Error & { code?: string };
    if (own.includes('--help') || own.includes('-h')) return undefined;
    throw typeof err.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS')
      ? new UsageError(err.message.replace(/\. To specify a positional argument.*$/s, ''))
      : err;
  }
  if (parsed.values.help) return undefined;
  const values: Record<string, Value> = {};
  for (const o of c.options) {
    const raw = parsed.values[o.name] as string | boolean | string[] | undefined;
    if (raw === undefined) values[o.name] = o.default === undefined ? undefined : convert(o, o.default);
    else if (typeof raw === 'boolean') values[o.name] = raw;
    else if (Array.isArray(raw)) values[o.name] = raw.map((r) => convert(o, r) as string);
    else values[o.name] = convert(o, raw);
  }
  const modes = c.options.filter((o) => o.mode && values[o.name]);
  for (const o of c.options) {
    if (o.with && parsed.values[o.name] !== undefined && !values[o.with]) throw new UsageError(`--${o.name} goes with --${o.with}`);
    if (o.required && modes.length === 0 && values[o.name] === undefined)
      throw new UsageError(`${c.path.join(' ')} needs --${o.name} ${o.value ?? ''}`.trimEnd());
  }
  const pos = parsed.positionals;
  const max = c.positionals?.at(-1)?.variadic ? Infinity : (c.positionals?.length ?? 0);
  const min = c.positionals?.filter((p) => !p.optional).length ?? 0;
  if (pos.length > max) throw new UsageError(`unexpected argument "${pos[max]}" for ${c.path.join(' ')}`);
  if (pos.length < min)
    throw new UsageError(
      `${c.path.join(' ')} needs ${c
        .positionals!.slice(pos.length, min)
        .map((p) => p.name)
        .join(' ')}`,
    );
  for (const o of c.options) {
    const v = values[o.name];
    if (o.check && typeof v === 'string') checked(o.check, v);
    else if (o.check && Array.isArray(v)) for (const x of v) checked(o.check, x);
  }
  for (const [i, p] of pos.entries()) {
    const check = c.positionals![Math.min(i, c.positionals!.length - 1)]!.check;
    if (check) checked(check, p);
  }
  if (c.passthrough && rest.length === 0) throw new UsageError(`${c.path.join(' ')} needs ${c.passthrough} after --`);
  return new Args(c, values, pos, rest);
}

const positionalSynopsis = (p: Positional): string => `${p.optional ? `[${p.name}]` : p.name}${p.variadic ? '...' : ''}`;

function optionSynopsis(o: OptionSpec): string {
  const text = `--${o.name}${o.value ? ` ${o.choices ? o.choices.join('|') : o.value}` : ''}`;
  return o.required ? text : `[${text}]`;
}

/** The command's form in the top-level list: words, positionals, required and brief options. */
export function synopsis(c: CommandSpec): string[] {
  const args = (c.positionals ?? []).map(positionalSynopsis);
  const shown = c.options.filter((o) => (o.required || o.brief) && !o.mode && !o.with);
  const more = c.options.length > shown.length + c.options.filter((o) => o.mode).length ? ['[options]'] : [];
  const main = [commandName(c), ...args, ...shown.map(optionSynopsis), ...more, ...(c.passthrough ? ['--', c.passthrough] : [])].join(' ');
  const modes = c.options
    .filter((o) => o.mode)
    .map((m) => [commandName(c), `--${m.name}`, ...c.options.filter((o) => o.with === m.name).map(optionSynopsis)].join(' '));
  return [main, ...modes];
}

/** Lines of `weft ...  summary`, the summary on the next line when the command is long. */
export function listing(commands: CommandSpec[]): string {
  const col = 46;
  const lines: string[] = [];
  for (const c of commands) {
    const [main, ...modes] = synopsis(c);
    const forms: [string, string][] = [[main!, c.summary], ...modes.map((m, i) => [m, c.options.filter((o) => o.mode)[i]!.mode!] as [string, string])];
    for (const [form, summary] of forms) {
      if (form.length + 2 < col) lines.push(`  ${form.padEnd(col)}${summary}`);
      else lines.push(`  ${form}`, `${' '.repeat(col + 2)}${summary}`);
    }
  }
  return lines.join('\n');
}

export function help(c: CommandSpec): string {
  const args = [...(c.positionals ?? []).map(positionalSynopsis), '[options]', ...(c.passthrough ? ['--', c.passthrough] : [])];
  const rows = [...c.options, HELP].map((o) => {
    const left = `${o.short ? `-${o.short}, ` : ''}--${o.name}${o.value ? ` ${o.value}` : ''}`;
    const notes = [
      o.choices ? `one of ${o.choices.join(', ')}` : '',
      o.listOf ? `a comma list of ${o.listOf.join(', ')}` : '',
      o.int ? `${o.int.min}–${o.int.max}` : '',
      o.required ? 'required' : '',
      o.with ? `with --${o.with}` : '',
      o.multiple ? 'may be repeated' : '',
      o.default !== undefined ? `default: ${o.default}` : '',
    ].filter(Boolean);
    return [left, `${o.description}${notes.length ? ` [${notes.join('; ')}]` : ''}`] as const;
  });
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  return [
    `${commandName(c)}: ${c.summary}`,
    '',
    `Usage: ${commandName(c)} ${args.join(' ')}`,
    ...(c.details ? ['', c.details] : []),
    '',
    'Options:',
    ...rows.map(([l, r]) => `  ${l.padEnd(width)}${r}`),
  ].join('\n');
}

export function groupHelp(g: GroupSpec, commands: CommandSpec[]): string {
  return [`${commandName(g)}: ${g.summary}`, '', 'Usage:', listing(commands), '', `Run ${commandName(g)} COMMAND --help for a command's options.`].join('\n');
}
