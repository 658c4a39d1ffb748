/**
 * When the agent reconciles: on request (lease events; requests made while one runs, or in the
 * same turn of the event loop, coalesce into one run after it), every `resyncMs`, and `retryMs`
 * after a failed run. Nothing runs before start(): the first reconcile must see every lease.
 */
export class ReconcileScheduler {
  private started = false;
  private stopped = false;
  private running: Promise<void> | undefined;
  private queued = false;
  private pending: string | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    /** Resolves true when the run succeeded. */
    private readonly run: (reason: string) => Promise<boolean>,
    private readonly opts: { resyncMs: number; retryMs: number; onResync?: () => void },
  ) {}

  /** Runs the first reconcile now, then follows requests and the resync period. */
  start(reason: string): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.request(reason);
    this.scheduleResync();
  }

  request(reason: string): void {
    if (!this.started || this.stopped) return;
    this.pending ??= reason;
    if (this.running || this.queued) return;
    this.queued = true;
    setImmediate(() => this.next());
  }

  /** Waits for the run in progress, if any. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.resyncTimer);
    clearTimeout(this.retryTimer);
    await this.running;
  }

  private next(): void {
    this.queued = false;
    const reason = this.pending;
    this.pending = undefined;
    if (reason === undefined || this.stopped) return;
    this.running = this.run(reason)
      .then((ok) => {
        clearTimeout(this.retryTimer);
        if (!ok && !this.stopped) this.retryTimer = setTimeout(() => this.request('retry'), this.opts.retryMs);
      })
      .finally(() => {
        this.running = undefined;
        if (this.pending !== undefined) this.request(this.pending);
      });
  }

  private scheduleResync(): void {
    if (this.stopped) return;
    this.resyncTimer = setTimeout(() => {
      this.opts.onResync?.();
      this.request('resync');
      this.scheduleResync();
    }, this.opts.resyncMs);
  }
}
