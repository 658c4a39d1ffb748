import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { help, parse, synopsis, type CommandSpec } from './command.js';
import { UsageError } from './usage.js';

const spec: CommandSpec = {
  path: ['demo'],
  summary: 'a demo',
  positionals: [
    {
      name: 'NAME',
      optional: true,
      check: (v) => {
        if (v === 'bad') throw new Error('NAME "bad" is invalid');
      },
    },
  ],
  options: [
    { name: 'node', value: 'NODE', required: true, brief: true, description: 'the node' },
    { name: 'count', value: 'N', int: { min: 1, max: 9 }, default: '3', description: 'how many' },
    { name: 'kinds', value: 'LIST', listOf: ['a', 'b'], default: 'a,b', description: 'which kinds' },
    { name: 'level', value: 'L', choices: ['low', 'high'], description: 'the level' },
    { name: 'rate', value: 'S', number: { min: 0.5 }, description: 'a rate' },
    { name: 'cleanup', mode: 'clean up instead', description: 'clean up' },
    { name: 'keep', with: 'cleanup', description: 'keep some' },
  ],
  run: () => 0,
};

const fails = (argv: string[], message: RegExp) =>
  assert.throws(
    () => parse(spec, argv),
    (e: unknown) => e instanceof UsageError && message.test(e.message),
  );

describe('command table parser', () => {
  it('applies defaults through the same conversion as given values', () => {
    const a = parse(spec, ['--node', 'n1'])!;
    assert.equal(a.num('count'), 3);
    assert.deepEqual(a.list('kinds'), ['a', 'b']);
    assert.equal(a.str('level'), undefined);
    const b = parse(spec, ['--node', 'n1', '--count', '7', '--kinds', 'b', '--rate', '0.5', 'x'])!;
    assert.equal(b.num('count'), 7);
    assert.deepEqual(b.list('kinds'), ['b']);
    assert.equal(b.num('rate'), 0.5);
    assert.deepEqual(b.positionals, ['x']);
  });

  it('refuses bad values, missing required options and extra arguments with a usage error', () => {
    fails(['--node', 'n', '--count', '10'], /--count takes a whole number from 1 to 9, not "10"/);
    fails(['--node', 'n', '--count', '1.5'], /--count takes a whole number/);
    fails(['--node', 'n', '--count', ''], /--count takes a whole number/);
    fails(['--node', 'n', '--kinds', 'a,c'], /--kinds is a comma-separated list of a, b, not "c"/);
    fails(['--node', 'n', '--level', 'mid'], /--level is low or high, not "mid"/);
    fails(['--node', 'n', '--rate', '0.1'], /--rate takes a number, at least 0.5/);
    fails([], /demo needs --node NODE/);
    fails(['--node', 'n', 'a', 'b'], /unexpected argument "b" for demo/);
    fails(['--node', 'n', 'bad'], /NAME "bad" is invalid/);
    fails(['--node', 'n', '--bogus'], /Unknown option '--bogus'/);
    fails(['--node', 'n', '--keep'], /--keep goes with --cleanup/);
  });

  it("a mode option lifts the main form's required options", () => {
    const a = parse(spec, ['--cleanup', '--keep'])!;
    assert.equal(a.bool('cleanup'), true);
    assert.equal(a.bool('keep'), true);
  });

  it('--help and -h win over everything else, even unknown options', () => {
    assert.equal(parse(spec, ['--help']), undefined);
    assert.equal(parse(spec, ['-h', '--bogus']), undefined);
  });

  it('help names every option with its value, default and constraints; the synopsis its forms', () => {
    const text = help(spec);
    for (const o of spec.options) assert.ok(text.includes(`--${o.name}${o.value ? ` ${o.value}` : ''}`), o.name);
    assert.match(text, /--count N +how many \[1–9; default: 3\]/);
    assert.match(text, /--level L +the level \[one of low, high\]/);
    assert.match(text, /-h, --help/);
    assert.deepEqual(synopsis(spec), ['weft demo [NAME] --node NODE [options]', 'weft demo --cleanup [--keep]']);
  });
});
