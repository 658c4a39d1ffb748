import { rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';

/**
 * Unix socket → TCP, run inside a lab namespace: the root namespace reaches a server on the lab's
 * underlay (the lab's Prometheus, monitoring.ts) through a socket file, never through its own network.
 * Usage: forward-main.js SOCKET HOST PORT
 */
const [socket, host, port] = process.argv.slice(2);
if (!socket || !host || !port) {
  console.error('usage: forward-main.js SOCKET HOST PORT');
  process.exit(2);
}

const server = createServer((client) => {
  const upstream = connect(Number(port), host);
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', (e) => {
    console.error(`${host}:${port}: ${e.message}`);
    client.destroy();
  });
});
rmSync(socket, { force: true });
server.listen(socket);
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => server.close(() => process.exit(0)));
