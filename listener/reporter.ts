// Peer reports leave the listener in batches: to the bootstrap service (retrying while it is down, from a
// bounded buffer: nothing is lost unless the buffer overflows, and overflow is counted) or, for a listener
// without a bootstrap, as NDJSON lines on stdout.

import type { Logger } from '../lib/log.js';
import type { Metrics } from '../lib/metrics.js';

export interface PeerReport {
  address: string;
  kind: 'host' | 'widescan';
  job: string;
  rttMs?: number;
}

export interface Reporter {
  report(peer: PeerReport): void;
  /** Delivers everything buffered; resolves when delivered (or rejects after `deadlineMs`). */
  flush(deadlineMs?: number): Promise<void>;
  close(): Promise<void>;
}

export class StdoutReporter implements Reporter {
  report(peer: PeerReport): void {
    process.stdout.write(`${JSON.stringify({ ...peer, seenAt: new Date().toISOString() })}\n`);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

export interface BootstrapReporterOptions {
  url: string;
  token: string;
  logger: Logger;
  metrics: Metrics;
  capacity?: number;
  /** Peers per POST; 5000 (~0.4 MiB, under the bootstrap's 1 MiB body limit) keeps round trips few when replies pour in. */
  batchSize?: number;
  intervalMs?: number;
}

export class BootstrapReporter implements Reporter {
  private buffer: PeerReport[] = [];
  private readonly timer: NodeJS.Timeout;
  private inflight: Promise<void> | undefined;
  private backoffMs = 0;
  private retryAt = 0;

  constructor(private readonly o: BootstrapReporterOptions) {
    this.timer = setInterval(() => void this.pump(), o.intervalMs ?? 250);
  }

  report(peer: PeerReport): void {
    if (this.buffer.length >= (this.o.capacity ?? 100_000)) {
      this.o.metrics.reportsDropped.inc();
      return;
    }
    this.buffer.push(peer);
    if (this.buffer.length >= (this.o.batchSize ?? 5000)) void this.pump();
  }

  private pump(): Promise<void> {
    if (this.inflight || this.buffer.length === 0 || Date.now() < this.retryAt) return this.inflight ?? Promise.resolve();
    this.inflight = this.post().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async post(): Promise<void> {
    const batch = this.buffer.slice(0, this.o.batchSize ?? 5000);
    try {
      const res = await fetch(new URL('/api/v1/peers', this.o.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.o.token}` },
        body: JSON.stringify({ peers: batch }),
        signal: AbortSignal.timeout(10_000),
      });
      // Always read: an unread body keeps its connection busy until garbage collection.
      const body = await res.text();
      // 408 and 429 (a proxy's timeout or rate limit in front of the bootstrap) are worth retrying.
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
        // The bootstrap refuses the batch itself: retrying cannot help; drop it loudly.
        this.buffer.splice(0, batch.length);
        this.o.metrics.reportsDropped.inc(batch.length);
        this.o.logger.error({ status: res.status, body: body.slice(0, 1000) }, 'bootstrap refused a peer batch');
        return;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      this.buffer.splice(0, batch.length);
      this.backoffMs = 0;
    } catch (err) {
      this.backoffMs = Math.min(5000, this.backoffMs ? this.backoffMs * 2 : 100);
      this.retryAt = Date.now() + this.backoffMs;
      this.o.logger.warn({ err: String(err), buffered: this.buffer.length, retryInMs: this.backoffMs }, 'bootstrap unreachable; keeping peers');
    }
  }

  async flush(deadlineMs = 30_000): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    while (this.buffer.length > 0 || this.inflight) {
      const left = deadline - Date.now();
      if (left < 0) {
        throw new Error(`could not deliver ${this.buffer.length} peer reports to ${this.o.url} within ${deadlineMs} ms; is the bootstrap service up?`);
      }
      this.retryAt = Math.min(this.retryAt, Date.now() + 200);
      // A bootstrap that accepts connections but never answers must not hold the caller past its deadline.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.pump(), new Promise((r) => (timer = setTimeout(r, left)))]).finally(() => clearTimeout(timer));
      if (this.buffer.length > 0) await new Promise((r) => setTimeout(r, 50));
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.inflight;
  }

  get buffered(): number {
    return this.buffer.length;
  }
}
