import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { decode, encode, type Answer, type Packet, type RecordType } from 'dns-packet';
import type { RegistryEvent } from '../service/cache.js';
import type { EndpointSliceRecord, PodRecord, Service } from '../service/types.js';
import type { ZoneSource } from '../dns/zone.js';

/** A registry cache driven by hand: put/delete change the maps and emit the events RegistryCache would. */
export class FakeRegistry implements ZoneSource {
  readonly services = new Map<string, Service>();
  readonly pods = new Map<string, PodRecord>();
  readonly slices = new Map<string, EndpointSliceRecord>();
  private readonly listeners = new Set<(e: RegistryEvent) => void>();

  on(listener: (e: RegistryEvent) => void): () => unknown {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  service(s: Partial<Service> & { name: string }): Service {
    const svc: Service = {
      namespace: 'default',
      labels: {},
      type: 'ClusterIP',
      ports: [],
      sessionAffinity: 'None',
      affinityTimeoutSeconds: 10800,
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
      uid: s.name,
      creationTimestamp: new Date(0).toISOString(),
      ...s,
    };
    this.put('service', this.services, svc);
    return svc;
  }

  pod(p: Partial<PodRecord> & { name: string }): PodRecord {
    const pod: PodRecord = {
      namespace: 'default',
      labels: {},
      ports: [],
      ready: true,
      terminating: false,
      uid: p.name,
      creationTimestamp: new Date(0).toISOString(),
      ...p,
    };
    this.put('pod', this.pods, pod);
    return pod;
  }

  slice(s: EndpointSliceRecord): void {
    this.put('slice', this.slices, s);
  }

  delete(kind: 'service' | 'pod' | 'slice', key: string): void {
    const map = (kind === 'service' ? this.services : kind === 'pod' ? this.pods : this.slices) as Map<string, unknown>;
    const old = map.get(key);
    map.delete(key);
    this.emit({ kind, type: 'delete', key, old } as RegistryEvent);
  }

  emit(e: RegistryEvent): void {
    for (const l of this.listeners) l(e);
  }

  private put<T extends { namespace: string; name: string }>(kind: 'service' | 'pod' | 'slice', map: Map<string, T>, v: T): void {
    const key = `${v.namespace}/${v.name}`;
    const old = map.get(key);
    map.set(key, v);
    this.emit({ kind, type: 'put', key, ...(old && { old }), now: v } as unknown as RegistryEvent);
  }
}

/** A query message: `dns-packet` form, or raw bytes as sent. */
export function query(name: string, type: RecordType, o: { id?: number; edns?: number } = {}): Buffer {
  return encode({
    type: 'query',
    id: o.id ?? 4242,
    flags: 0x0100,
    questions: [{ name, type, class: 'IN' }],
    ...(o.edns !== undefined && { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: o.edns } as unknown as Answer] }),
  });
}

/** Sends one message over UDP and decodes the answer (rejects after timeoutMs). */
export function askUdp(address: string, port: number, msg: Buffer, timeoutMs = 2000): Promise<Packet & { raw: Buffer }> {
  return new Promise((resolve, reject) => {
    const sock = createSocket('udp4');
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error(`no UDP answer from ${address}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('message', (m) => {
      clearTimeout(timer);
      sock.close();
      resolve({ ...decode(m), raw: m });
    });
    sock.send(msg, port, address);
  });
}

/** Sends messages over one TCP connection (all in one write) and decodes the answers in the order they come. */
export function askTcp(address: string, port: number, msgs: Buffer[], timeoutMs = 2000): Promise<Packet[]> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: address, port });
    const out: Packet[] = [];
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`${out.length} of ${msgs.length} TCP answers from ${address}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('connect', () =>
      sock.write(
        Buffer.concat(
          msgs.flatMap((m) => {
            const len = Buffer.alloc(2);
            len.writeUInt16BE(m.length);
            return [len, m];
          }),
        ),
      ),
    );
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        out.push(decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (out.length === msgs.length) {
        clearTimeout(timer);
        sock.destroy();
        resolve(out);
      }
    });
  });
}
