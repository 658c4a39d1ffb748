import type { Logger } from './log.js';

/**
 * Whether etcd answers, as the agent last saw it, logged once per change (not once per failed
 * retry), and when the store was last found to have lost its data. `noQuorum`: members answer
 * but none has a leader (set and cleared only by the agent's probe, which asks the members).
 */
export class StoreHealth {
  healthy = true;
  since = new Date();
  noQuorum: string | undefined;
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

  /** What the probe found: members answer without a leader. */
  quorumLost(detail: string): void {
    const was = this.noQuorum;
    this.noQuorum = detail;
    if (this.healthy) {
      this.healthy = false;
      this.since = new Date();
      this.suppressed = 0;
    }
    if (!was) this.log.warn('etcd has no quorum: no node can join or change its lease and no Service can change; pod traffic is unaffected', { detail });
  }

  /** What the probe found: no member answers. */
  unreachable(detail: string): void {
    this.noQuorum = undefined;
    this.down(new Error(detail));
  }

  up(): void {
    if (this.healthy) return;
    const secs = ((Date.now() - this.since.getTime()) / 1000).toFixed(1);
    this.healthy = true;
    this.noQuorum = undefined;
    this.since = new Date();
    this.log.info('etcd reachable again', { after: `${secs}s`, suppressedErrors: this.suppressed });
  }

  wasReset(reason: string): void {
    this.up();
    this.reset = { at: new Date().toISOString(), reason };
  }

  view(): { healthy: boolean; since: string; noQuorum?: string; reset?: { at: string; reason: string } } {
    return {
      healthy: this.healthy,
      since: this.since.toISOString(),
      ...(this.noQuorum ? { noQuorum: this.noQuorum } : {}),
      ...(this.reset ? { reset: this.reset } : {}),
    };
  }
}
