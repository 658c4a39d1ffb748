/**
 * The CLI's output and interruption. A closed stdout or stderr (`weft lab up | head -2`) stops the
 * writing and nothing else: the running operation finishes, so what it made stays recorded. SIGINT and
 * SIGTERM abort the operations that take a signal (they roll back); a second signal exits at once.
 */
const open = { stdout: true, stderr: true };

/** Called once by the entry point: a reader that went away closes that stream for us, no more. */
export function survivePipeClose(): void {
  for (const name of ['stdout', 'stderr'] as const) {
    process[name].on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
      open[name] = false;
    });
  }
}

function write(name: 'stdout' | 'stderr', text: string): void {
  if (open[name] && !process[name].destroyed) process[name].write(`${text}\n`);
}

/** A line for the user on stdout. */
export const print = (text: string): void => write('stdout', text);

/** A line on stderr: errors, and progress when stdout carries JSON. */
export const warn = (text: string): void => write('stderr', text);

export const printJson = (value: unknown): void => print(JSON.stringify(value, null, 2));

/** Where a command's progress goes: stdout for people, stderr when stdout carries JSON. */
export const progressTo = (json: boolean): ((text: string) => void) => (json ? warn : print);

const EXIT_BY_SIGNAL = { SIGINT: 130, SIGTERM: 143 } as const;
let interrupted: keyof typeof EXIT_BY_SIGNAL | undefined;

/** The signal that interrupted the command, if one did: main exits with 128 + its number. */
export const interruptedBy = () => interrupted;
export const exitCodeFor = (sig: keyof typeof EXIT_BY_SIGNAL) => EXIT_BY_SIGNAL[sig];

/**
 * An AbortSignal that SIGINT and SIGTERM abort, for an operation that rolls back when aborted. The
 * handlers stay for the rest of the process (a CLI runs one command).
 */
export function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  const onSignal = (sig: keyof typeof EXIT_BY_SIGNAL) => {
    if (interrupted) {
      warn(`weft: ${sig} again: exiting without finishing the roll-back; weft lab down removes what is left`);
      process.exit(EXIT_BY_SIGNAL[sig]);
    }
    interrupted = sig;
    warn(`weft: ${sig}: stopping and removing what this command made (send it again to exit at once)`);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return controller.signal;
}
