import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { parseArgs } from 'node:util';

/**
 * The probe `weft trace` sends, run inside SRC's namespace: one TCP connection or one UDP datagram
 * from a fixed source port (which the trace's nft rules match). Prints one JSON line: whether an
 * answer came back (`refused`: the destination answered with a reset or port unreachable).
 */
const { values } = parseArgs({
  options: { proto: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, sport: { type: 'string' }, timeout: { type: 'string' } },
});
const [host, port, sport, timeoutMs] = [values.host!, Number(values.port), Number(values.sport), Number(values.timeout ?? 2000)];
const started = performance.now();
const done = (r: { ok: boolean; refused?: boolean; error?: string; answer?: string }) => {
  process.stdout.write(`${JSON.stringify({ ...r, ms: Math.round(performance.now() - started) })}\n`);
  process.exit(0);
};
setTimeout(() => done({ ok: false, error: `no answer within ${timeoutMs} ms` }), timeoutMs);
const failed = (e: NodeJS.ErrnoException) =>
  done(e.code === 'ECONNREFUSED' ? { ok: true, refused: true } : { ok: false, error: `${e.code ?? 'error'}: ${e.message}` });
if (values.proto === 'udp') {
  const sock = createSocket('udp4');
  sock.on('message', (m) => done({ ok: true, answer: m.toString().slice(0, 200) }));
  sock.on('error', failed);
  // Connected, so that an ICMP port unreachable comes back as ECONNREFUSED instead of silence.
  sock.on('connect', () => sock.send('weft trace'));
  sock.bind(sport, () => sock.connect(port, host));
} else {
  const sock = connect({ host, port, localPort: sport });
  sock.on('connect', () => {
    sock.destroy();
    done({ ok: true });
  });
  sock.on('error', failed);
}
