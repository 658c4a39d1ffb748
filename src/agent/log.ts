/**
 * Structured logs: every line has a time, a level, a message and key=value fields. The default
 * format is for people (`2025-01-02T03:04:05.678Z INFO  lease acquired subnet=10.244.3.0/24`);
 * `json` prints one JSON object a line for collectors.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

function fmt(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s);
}

export function createLogger(options: { format?: 'text' | 'json'; level?: Level; base?: Fields; write?: (line: string) => void } = {}): Logger {
  const min = ORDER[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const base = options.base ?? {};
  const emit = (level: Level, msg: string, fields: Fields = {}): void => {
    if (ORDER[level] < min) return;
    const time = new Date().toISOString();
    const all = { ...base, ...fields };
    if (options.format === 'json') {
      write(JSON.stringify({ time, level, msg, ...all }));
      return;
    }
    const kv = Object.entries(all)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${fmt(v)}`)
      .join(' ');
    write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${kv ? ` ${kv}` : ''}`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}
