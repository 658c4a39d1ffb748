import { readFileSync } from 'node:fs';
import { groupHelp, help, listing, parse } from './command.js';
import { COMMANDS, GROUPS } from './commands.js';
import { exitCodeFor, interruptedBy, print, survivePipeClose, warn } from './output.js';
import { UsageError } from './usage.js';

const version = (): string => (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const USAGE = `weft ${version()}: Kubernetes-style pod networking for Linux

Usage:
${listing(COMMANDS)}
  weft --version                                print the version

Run weft COMMAND --help (or weft help COMMAND) for a command's options.
Exit status: 0 done, 1 failed, 2 usage error, 130/143 interrupted by SIGINT/SIGTERM.
--json prints JSON alone on stdout; progress and errors go to stderr.`;

const startsWith = (path: string[], words: string[]) => path.every((w, i) => words[i] === w);

/** Where a usage error's text comes from: the command, the group the words named, or the whole list. */
let usageOf = USAGE;

async function main(argv: string[]): Promise<number> {
  if (argv.length === 0) {
    warn(USAGE);
    return 2;
  }
  if (argv[0] === '--version') {
    print(version());
    return 0;
  }
  if (argv[0] === 'help' && argv.length > 1) return main([...argv.slice(1), '--help']);
  if (['--help', '-h', 'help'].includes(argv[0]!)) {
    print(USAGE);
    return 0;
  }
  const firstOption = argv.findIndex((a) => a.startsWith('-'));
  const words = firstOption < 0 ? argv : argv.slice(0, firstOption);
  const command = COMMANDS.filter((c) => startsWith(c.path, words)).sort((x, y) => y.path.length - x.path.length)[0];
  // A group named by more words than the command that matches (`weft agent status` vs `weft agent`) wins.
  const group = GROUPS.filter((g) => startsWith(g.path, words) && g.path.length > (command?.path.length ?? 0)).sort((x, y) => y.path.length - x.path.length)[0];
  if (group) {
    const text = groupHelp(
      group,
      COMMANDS.filter((c) => startsWith(group.path, c.path)),
    );
    if (argv.includes('--help') || argv.includes('-h')) {
      print(text);
      return 0;
    }
    usageOf = text;
    const next = words[group.path.length];
    throw new UsageError(next ? `unknown ${group.path.join(' ')} command "${next}"` : `${group.path.join(' ')} needs a command`);
  }
  if (!command) throw new UsageError(`unknown command "${argv[0]}"`);
  usageOf = help(command);
  const args = parse(command, argv.slice(command.path.length));
  if (!args) {
    print(usageOf);
    return 0;
  }
  return command.run(args);
}

survivePipeClose();
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const sig = interruptedBy();
    if (e instanceof UsageError) {
      warn(`weft: ${e.message}\n\n${usageOf}`);
      process.exitCode = 2;
    } else {
      warn(`weft: ${(e as Error).message ?? String(e)}`);
      process.exitCode = sig ? exitCodeFor(sig) : 1;
    }
  },
);
