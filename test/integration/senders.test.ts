// Sender threads (worker/senders.ts) for real: the compiled dist/worker/ (ts-jest cannot run a .ts thread
// entry; `npm run build` builds dist/) in a network namespace this test creates, whose lo has a /64 routed
// `local`: every echo request sent there is counted by that namespace's kernel (Icmp6InEchos), so the test
// checks that each probe left exactly once, however many sends wait for a thread. Needs root and iproute2.
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { execFile as execFileCallback } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFile = promisify(execFileCallback);
const dist = path.join(process.cwd(), 'dist');

// The child, in the namespace: argv = dist. Prints one JSON report.
const CHILD = `
const [dist] = process.argv.slice(2);
const { SenderThreads } = await import(dist + '/worker/senders.js');
const { ProbeBatch } = await import(dist + '/worker/generator.js');
const { ProbeWriter } = await import(dist + '/lib/core/probe.js');
const outcome = async (f) => { try { await f(); return 'ok'; } catch (e) { return e.name + ': ' + e.message; } };
const writer = new ProbeWriter({ networkId: 1, jobTag: 2, macKey: new Uint8Array(16) });
// Five batches of 300 probes to …:1aa::/64 (routed local here), sent at once on two threads.
const batches = Array.from({ length: 5 }, (_, b) => {
  const batch = new ProbeBatch(300, writer.packetBytes);
  for (let i = 0; i < 300; i++) {
    batch.addresses.set([0xfd, 0, 0x05, 0xca, 0x01, 0xab, 0x01, 0xaa], i * 16);
    new DataView(batch.addresses.buffer).setUint32(i * 16 + 12, b * 300 + i + 1);
    writer.write(batch.packets, i * writer.packetBytes, batch.addresses, i * 16, 0, b * 300 + i, Date.now());
  }
  batch.count = 300;
  return batch;
});
const report = {};
const t = await SenderThreads.open(2, { sendBufferBytes: 1 << 20 });
report.path = t.path;
report.size = t.size;
t.setHopLimit(7);
report.results = await Promise.all(batches.map((b) => t.send(b.packets, b.packetBytes, b.addresses, 0, b.count)));
report.bad = {
  hops: await outcome(() => t.setHopLimit(0)),
  notShared: await outcome(() => t.send(Buffer.alloc(writer.packetBytes), writer.packetBytes, new Uint8Array(16), 0, 1)),
  beyond: await outcome(() => t.send(batches[0].packets, writer.packetBytes, batches[0].addresses, 0, 301)),
  receive: await outcome(() => t.onPackets(() => {})),
  one: await outcome(() => SenderThreads.open(1, { sendBufferBytes: 1 << 20 })),
  many: await outcome(() => SenderThreads.open(65, { sendBufferBytes: 1 << 20 })),
};
// Still usable after a refused send.
report.after = await t.send(batches[0].packets, writer.packetBytes, batches[0].addresses, 0, 10);
t.close();
report.closed = await outcome(() => t.send(batches[0].packets, writer.packetBytes, batches[0].addresses, 0, 1));
process.env.WIDESCAN_IO = 'raw-socket';
report.rawSocket = await outcome(() => SenderThreads.open(2, { sendBufferBytes: 1 << 20 }));
process.stdout.write(JSON.stringify(report));
`;

const ns = `wsst-${[...randomBytes(4)].map((b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('')}`;
let workDir = '';
let created = false;
const run = async (argv: string[]) => (await execFile(argv[0]!, argv.slice(1), { timeout: 30_000 })).stdout;
const echoesIn = async () => Number(/Icmp6InEchos\s+(\d+)/.exec(await run(['ip', 'netns', 'exec', ns, 'cat', '/proc/net/snmp6']))![1]);

beforeAll(async () => {
  for (const file of ['worker/senders.js', 'worker/send-thread.js']) {
    if (!existsSync(path.join(dist, file))) throw new Error(`dist/${file} is missing: run npm run build`);
  }
  workDir = await mkdtemp(path.join(os.tmpdir(), 'widescan-senders-'));
  await writeFile(path.join(workDir, 'child.mjs'), CHILD);
  await run(['ip', 'netns', 'add', ns]);
  created = true;
  await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  await run(['ip', '-n', ns, '-6', 'route', 'add', 'local', 'fd00:5ca:1ab:1aa::/64', 'dev', 'lo']);
}, 30_000);

afterAll(async () => {
  if (created) await run(['ip', 'netns', 'del', ns]).catch(() => {});
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

test('sends on two threads: every probe of five concurrent batches leaves once; bad calls are refused with the reason', async () => {
  const before = await echoesIn();
  const { stdout } = await execFile('ip', ['netns', 'exec', ns, process.execPath, path.join(workDir, 'child.mjs'), dist], {
    timeout: 60_000,
    env: { ...process.env, WIDESCAN_IO: '' },
  });
  const r = JSON.parse(stdout) as Record<string, unknown> & { bad: Record<string, string> };
  expect(r.path).toBe('sendmmsg');
  expect(r.size).toBe(2);
  expect(r.results).toEqual(Array.from({ length: 5 }, () => ({ sent: 300, errors: {} })));
  expect(r.after).toEqual({ sent: 10, errors: {} });
  // 5 × 300 and the 10 sent after the refusals, each counted once by the namespace's kernel.
  expect((await echoesIn()) - before).toBe(1510);
  expect(r.bad.hops).toBe('RangeError: hopLimit must be an integer from 1 to 255, got 0');
  expect(r.bad.notShared).toMatch(/^TypeError: sender threads send from shared memory/);
  expect(r.bad.beyond).toMatch(/^Error: probes \[0, 301\) are not within the 300/);
  expect(r.bad.receive).toMatch(/^Error: sender threads send only and receive nothing/);
  expect(r.bad.one).toMatch(/^RangeError: sender threads must be an integer from 2 to 64, got 1 \(1 sends on the worker's own thread\)/);
  expect(r.bad.many).toMatch(/^RangeError: sender threads must be an integer from 2 to 64, got 65/);
  expect(r.closed).toBe('Error: the sender threads are closed; open new ones to send again');
  expect(r.rawSocket).toMatch(/^Error: sender threads could not start: sender threads need the native addon, and WIDESCAN_IO=raw-socket forbids it/);
}, 60_000);
