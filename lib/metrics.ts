import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { JobStatus, Phase } from './core/status.js';

// The metric names of DESIGN.md, defined once. Each process creates one registry with the metrics it
// serves; sharing the definitions keeps names, help texts and labels identical everywhere.

export function createMetrics(component: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  collectDefaultMetrics({ register: registry });
  const r = [registry];
  return {
    registry,
    probesSent: new Counter({ name: 'widescan_probes_sent_total', help: 'ICMPv6 probes sent', labelNames: ['job', 'backend'], registers: r }),
    sendErrors: new Counter({ name: 'widescan_send_errors_total', help: 'Probes the kernel refused to send', labelNames: ['job', 'reason'], registers: r }),
    addressesGenerated: new Counter({ name: 'widescan_addresses_generated_total', help: 'Target addresses generated (including excluded ones)', labelNames: ['backend'], registers: r }),
    generationSeconds: new Histogram({
      name: 'widescan_generation_seconds', help: 'Time to generate one batch of addresses and MAC tags', labelNames: ['backend'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1], registers: r,
    }),
    replies: new Counter({ name: 'widescan_replies_total', help: 'Echo replies received, by verification result', labelNames: ['job', 'result'], registers: r }),
    peersDiscovered: new Counter({ name: 'widescan_peers_discovered_total', help: 'New peers reported', labelNames: ['job', 'kind'], registers: r }),
    shards: new Gauge({ name: 'widescan_shards', help: 'Shards per job by state', labelNames: ['job', 'state'], registers: r }),
    queueDepth: new Gauge({ name: 'widescan_queue_depth', help: 'Shard queue depth by state', labelNames: ['state'], registers: r }),
    jobPhase: new Gauge({ name: 'widescan_job_phase', help: 'A job\'s phase: 1 for the current one, 0 for the others', labelNames: ['job', 'phase'], registers: r }),
    jobProgress: new Gauge({ name: 'widescan_job_progress_ratio', help: 'Fraction of a job\'s shards completed', labelNames: ['job'], registers: r }),
    reconcile: new Counter({ name: 'widescan_reconcile_total', help: 'Reconciles by result', labelNames: ['result'], registers: r }),
    reconcileSeconds: new Histogram({ name: 'widescan_reconcile_duration_seconds', help: 'Reconcile duration', registers: r }),
    bootstrapPeers: new Gauge({ name: 'widescan_bootstrap_peers', help: 'Peers known to the bootstrap service', labelNames: ['kind'], registers: r }),
    httpRequests: new Counter({ name: 'widescan_http_requests_total', help: 'HTTP requests by route and status code', labelNames: ['route', 'code'], registers: r }),
    ioPath: new Gauge({ name: 'widescan_io_path', help: 'ICMPv6 I/O path in use: sendmmsg (native addon), packet (its packet socket, send-only) or raw-socket', labelNames: ['path'], registers: r }),
    reportsDropped: new Counter({ name: 'widescan_reports_dropped_total', help: 'Peer reports dropped because the listener\'s bounded buffer was full', registers: r }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;

const SHARD_STATES = ['completed', 'failed', 'active', 'pending'] as const;
const PHASES: readonly Phase[] = ['Pending', 'Running', 'Succeeded', 'Failed', 'Suspended'];

/** The per-job gauges (`widescan_shards`, `widescan_job_progress_ratio`) from a job's status. */
export function recordJobStatus(m: Metrics, job: string, s: JobStatus): void {
  const done = s.shards.completed + s.shards.failed;
  const counts = { completed: s.shards.completed, failed: s.shards.failed, active: s.shards.active, pending: Math.max(0, s.shards.total - done - s.shards.active) };
  for (const state of SHARD_STATES) m.shards.set({ job, state }, counts[state]);
  m.jobProgress.set({ job }, s.shards.total === 0 ? 1 : done / s.shards.total);
  for (const phase of PHASES) m.jobPhase.set({ job, phase }, phase === s.phase ? 1 : 0);
}

/** Drops a job's gauges (it is gone: a stale series would look like a stalled job). */
export function forgetJobMetrics(m: Metrics, job: string): void {
  for (const state of SHARD_STATES) m.shards.remove({ job, state });
  m.jobProgress.remove({ job });
  for (const phase of PHASES) m.jobPhase.remove({ job, phase });
}
