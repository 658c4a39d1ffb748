import { randomBytes } from 'node:crypto';

/** A random MAC address, unicast and locally administered (02:xx:...), in lower case. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
