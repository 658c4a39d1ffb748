import type { Logger } from './log.js';

/**
 * Whether etcd answers, as the agent last saw it, logged once per change (not once per failed
 * retry), and when the store was last found to have lost its data.
 */
export class StoreHealth {
  healthy = true;
  since = new Date();
  reset: { at: string; reason: string } | undefined;
  private suppressed = 0;

  constructor(private readonly log: Logger) {}

  down(err: Error): void {
    if (this.healthy) {
      this.healthy = false;
      this.since = new Date();
      this.suppressed = 0;
      this.log.warn('etcd is unreachable; pod traffic is unaffected, retrying in the background', { error: err.message });
    } else {
      this.suppressed++;
      this.log.debug('etcd still unreachable', { error: err.message });
    }
  }

  up(): void {
    if (this.healthy) return;
    const secs = ((Date.now() - this.since.getTime()) / 1000).toFixed(1);
    this.healthy = true;
    this.since = new Date();
    this.log.info('etcd reachable again', { after: `${secs}s`, suppressedErrors: this.suppressed });
  }

  wasReset(reason: string): void {
    this.up();
    this.reset = { at: new Date().toISOString(), reason };
  }

  view(): { healthy: boolean; since: string; reset?: { at: string; reason: string } } {
    return { healthy: this.healthy, since: this.since.toISOString(), ...(this.reset ? { reset: this.reset } : {}) };
  }
}
