// The metrics/health endpoint of the worker and listener processes, over real HTTP.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMetrics } from '../../lib/metrics.js';
import { serveMetrics } from '../../lib/serve.js';

let server: Server;
let base: string;
let ready = false;

beforeAll(async () => {
  const metrics = createMetrics('worker');
  metrics.probesSent.inc({ job: 'lab', backend: 'cpu' }, 3);
  server = await serveMetrics(metrics.registry, 0, () => ready, '127.0.0.1');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('serveMetrics', () => {
  test('/metrics serves the DESIGN metric names and the process metrics', async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toContain('widescan_probes_sent_total{job="lab",backend="cpu",component="worker"} 3');
    expect(text).toContain('process_cpu_seconds_total');
  });

  test('/healthz is always ok; /readyz follows readiness', async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    ready = false;
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    ready = true;
    const res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  test('anything else is a JSON 404 or 405, never a crash', async () => {
    const missing = await fetch(`${base}/metrics/../../etc/passwd`);
    expect(missing.status).toBe(404); // the URL folds to /etc/passwd: not a route
    const unknown = await fetch(`${base}/nope?x=${'a'.repeat(10_000)}`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: 'not found' });
    const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x'.repeat(100_000) });
    expect(post.status).toBe(405);
    expect((await fetch(`${base}/metrics`)).status).toBe(200); // still serving
  });
});
