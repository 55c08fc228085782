// `widescan run` end to end, for real: the built CLI in a lab namespace, its own redis-server, BullMQ,
// raw ICMPv6 sockets, the listener and bootstrap; the lab's kernels answer, its sink counts strays.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadJob } from '../../lib/core/job.js';
import { jobTagOf } from '../../lib/core/keys.js';
import { expectedHosts, labStatus, type LabInfo } from '../../testbed/lab.js';
import { childPids, runCli, startCli, waitFor } from '../helpers/cli.js';
import { INJECTOR_PREAMBLE, parseNdjson, startLab, stopLab, writeJob } from '../helpers/lab.js';

let lab: LabInfo | undefined;
beforeAll(async () => {
  lab = await startLab();
});
afterAll(() => stopLab(lab));

const out = (name: string) => join(tmpdir(), `widescan-${process.pid}-${name}.ndjson`);
const inNamespace = (ns: string, argv: string[]) => {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} in ${ns}: ${r.stderr}`);
  return Promise.resolve(r.stdout);
};

/** A job over 4096 addresses of the lab's aliased /64: every target answers, so "every target probed" is checkable. */
const aliasedJob = (extra: string) =>
  writeJob(`apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: alias, uid: alias-uid}
spec:
  targets: [{prefix: "fd00:5ca:1ab:1aa::/116", strategy: full}]
  allowNonGlobal: true
  probe: {replyTimeoutSeconds: 1}
${extra}`);

describe('widescan run in the lab', () => {
  // The same exact outcome whether the worker sends on its own thread or on sender threads.
  test.each([
    ['on its own thread', {}],
    ['on 3 sender threads (WIDESCAN_SENDER_THREADS=3)', { WIDESCAN_SENDER_THREADS: '3' }],
  ])('finds exactly the live population and the second instance, and never probes the excluded subnet: worker sending %s', async (_, env: Record<string, string>) => {
    const before = await labStatus(lab!.name);
    const file = out('lab');
    const r = await runCli(['run', 'examples/lab.yaml', '--network-key-file', lab!.networkKeyFile, '--output', file], { ns: lab!.namespaces.scan, env });
    expect(r.stderr).not.toMatch(/"level":50/); // no error logs
    expect(r.code).toBe(0);
    const job = loadJob(readFileSync('examples/lab.yaml', 'utf8'));
    const expected = expectedHosts(job, lab!);
    expect(expected.size).toBeGreaterThan(20);
    const peers = parseNdjson(readFileSync(file, 'utf8'));
    expect(new Set(peers.map((p) => p.address))).toEqual(expected);
    expect(peers).toHaveLength(expected.size); // no address twice
    expect(peers.filter((p) => p.kind === 'widescan').map((p) => p.address)).toEqual([lab!.peerAddress]);
    for (const p of peers) {
      expect(p.job).toBe('lab');
      expect(p.rttMs).toBeGreaterThanOrEqual(0);
      expect(p.rttMs).toBeLessThan(5000);
    }
    const after = await labStatus(lab!.name);
    expect(after.counters.sinkEchoRequests - before.counters.sinkEchoRequests).toBe(0);
    // Every non-excluded target probed exactly once: 70144 positions − 16 excluded.
    expect(r.stdout).toMatch(/Succeeded: 70128 probes in [\d.]+ s \(\d+\/s\), \d+ valid replies \(0 invalid, 0 duplicate\)/);
    expect(r.stdout).toContain('16 excluded');
  });

  test('the blocklist wins over the job: blocklisted targets are never sent, the rest are', async () => {
    const blocklist = join(tmpdir(), `widescan-${process.pid}-blocklist.txt`);
    writeFileSync(blocklist, '# opt-outs\nfd00:5ca:1ab:9000::/121\n');
    // …:9000::/120 is routed to the sink, which answers and counts every echo request it gets.
    const file = writeJob(`apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: blocked}
spec:
  targets: [{prefix: "fd00:5ca:1ab:9000::/120", strategy: full}]
  allowNonGlobal: true
  probe: {replyTimeoutSeconds: 1}
`);
    const before = await labStatus(lab!.name);
    const r = await runCli(['run', file, '--blocklist', blocklist], { ns: lab!.namespaces.scan });
    expect(r.code).toBe(0);
    const after = await labStatus(lab!.name);
    expect(after.counters.sinkEchoRequests - before.counters.sinkEchoRequests).toBe(128);
    expect(r.stdout).toMatch(/Succeeded: 128 probes/);
    expect(r.stdout).toContain('128 excluded');
    expect(r.stdout).not.toMatch(/fd00:5ca:1ab:9000::[0-7]?[0-9a-f]\s/); // nothing below ::80 reported
    expect(r.stdout).toMatch(/fd00:5ca:1ab:9000::80\s+host/);
  });

  test('the packet path on 2 sender threads: each of 4096 answering targets probed once, every reply verified', async () => {
    const scanLink = `${lab!.name}-to-resp`;
    const routerMac = (await inNamespace(lab!.namespaces.resp, ['cat', `/sys/class/net/${lab!.name}-to-scan/address`])).trim();
    const file = out('packet');
    const r = await runCli(['run', aliasedJob('  shardSize: 1024\n'), '--output', file], {
      ns: lab!.namespaces.scan,
      env: { WIDESCAN_IO: 'packet', WIDESCAN_PACKET_INTERFACE: scanLink, WIDESCAN_PACKET_ROUTER_MAC: routerMac, WIDESCAN_SENDER_THREADS: '2' },
    });
    expect(r.stderr).not.toMatch(/"level":50/);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/"io":"packet","senderThreads":2/);
    expect(r.stdout).toMatch(/Succeeded: 4096 probes in [\d.]+ s \(\d+\/s\), 4096 valid replies \(0 invalid, 0 duplicate\)/);
    const hosts = parseNdjson(readFileSync(file, 'utf8')).filter((p) => p.kind === 'host');
    expect(new Set(hosts.map((p) => p.address)).size).toBe(4096);
  });

  test('bad sender thread settings stop the worker at start with the reason', async () => {
    const r = await runCli(['run', aliasedJob(''), '--no-progress'], { ns: lab!.namespaces.scan, env: { WIDESCAN_SENDER_THREADS: '65' }, timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('WIDESCAN_SENDER_THREADS must be from 1 to 64, got 65');
    const fallback = await runCli(['run', aliasedJob(''), '--no-progress'], {
      ns: lab!.namespaces.scan,
      env: { WIDESCAN_SENDER_THREADS: '2', WIDESCAN_IO: 'raw-socket' },
      timeoutMs: 30_000,
    });
    expect(fallback.code).not.toBe(0);
    expect(fallback.stderr).toContain('sender threads could not start: sender threads need the native addon, and WIDESCAN_IO=raw-socket forbids it');
  });

  /** Scans 4096 answering addresses with two workers and sends `signal` to one of them 1.2 s in. */
  async function signalOneWorker(signal: NodeJS.Signals, lockMs: number, output: string) {
    // Two shards of 2048 at 750/s each: a shard lasts ~2.7 s, so the signal at ~1.2 s lands mid-shard with
    // a margin on both sides, whatever the machine's load.
    const file = aliasedJob('  rate: {packetsPerSecond: 1500}\n  shardSize: 2048\n');
    const started = Date.now();
    const run = startCli(['run', file, '--workers', '2', '--output', output], {
      ns: lab!.namespaces.scan,
      env: { WIDESCAN_LOCK_MS: String(lockMs), WIDESCAN_CHECKPOINT_MS: '200' },
    });
    const workers = await waitFor(() => {
      const pids = childPids(run.child.pid!, 'worker/main.js');
      return pids.length === 2 && pids;
    }, 15_000, 'two workers');
    await new Promise((r) => setTimeout(r, 1200));
    process.kill(workers[0]!, signal);
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(parseNdjson(readFileSync(output, 'utf8')).filter((p) => p.kind === 'host')).toHaveLength(4096);
    return { r, seconds: (Date.now() - started) / 1000 };
  }

  test('a worker killed with SIGKILL mid-shard: the shard is redelivered, resumes at its checkpoint, every target is probed', async () => {
    const { r } = await signalOneWorker('SIGKILL', 1500, out('kill'));
    expect(r.stderr).toContain('resuming shard from checkpoint');
    const probes = Number(/Succeeded: (\d+) probes/.exec(r.stdout)![1]);
    // Resumed, not restarted: at most a checkpoint interval of probes (≈ 300 at 1500/s) is sent twice.
    expect(probes).toBeGreaterThanOrEqual(4096);
    expect(probes).toBeLessThan(4096 + 600);
  });

  test('a worker stopped with SIGTERM hands its shard back at once (no lock expiry) and the job completes', async () => {
    const { r, seconds } = await signalOneWorker('SIGTERM', 60_000, out('term'));
    expect(r.stderr).toContain('shard returned to the queue');
    // A shard left locked would have waited for the 60 s lock to expire.
    expect(seconds).toBeLessThan(30);
  });

  test('SIGINT cancels the job: workers abandon their shards promptly and no probe leaves after exit', async () => {
    const file = aliasedJob('  rate: {packetsPerSecond: 300}\n  shardSize: 1024\n');
    const run = startCli(['run', file, '--workers', '2'], { ns: lab!.namespaces.scan, env: { WIDESCAN_CHECKPOINT_MS: '200' } });
    await waitFor(() => childPids(run.child.pid!, 'worker/main.js').length === 2, 15_000, 'two workers');
    await new Promise((r) => setTimeout(r, 1500));
    const interruptedAt = Date.now();
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(1);
    expect(Date.now() - interruptedAt).toBeLessThan(8000);
    expect(r.stderr).toContain('interrupted: the job was cancelled');
    expect(r.stderr).toMatch(/"why":"job cancelled","msg":"shard abandoned"/);
    const after = await labStatus(lab!.name);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await labStatus(lab!.name)).counters.respEchoRequests).toBe(after.counters.respEchoRequests);
  });

  test('spoofed and malformed replies are counted invalid and never become peers', async () => {
    const uid = 'spoof-test-uid';
    const file = writeJob(`apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: spoof, uid: ${uid}}
spec:
  targets: [{prefix: "fd00:5ca:1ab:200::/120", strategy: full}]
  allowNonGlobal: true
  rate: {packetsPerSecond: 100}
  probe: {replyTimeoutSeconds: 1}
`);
    const run = startCli(['run', file, '--network-key-file', lab!.networkKeyFile, '--output', out('spoof')], { ns: lab!.namespaces.scan });
    const injector = join(tmpdir(), `widescan-${process.pid}-inject.mjs`);
    writeFileSync(injector, INJECTOR);
    await new Promise((r) => setTimeout(r, 1200)); // listener up
    const sent = spawnSync('ip', ['netns', 'exec', lab!.namespaces.resp, process.execPath, injector, lab!.networkKeyFile, String(jobTagOf(uid)), process.cwd()], { encoding: 'utf8' });
    expect(sent.status).toBe(0);
    expect(Number(sent.stdout.trim())).toBe(300);
    const r = await run.done;
    expect(r.code).toBe(0);
    const peers = parseNdjson(readFileSync(out('spoof'), 'utf8'));
    expect(peers.map((p) => p.address).sort()).toEqual(['fd00:5ca:1ab:200::1', 'fd00:5ca:1ab:200::80', 'fd00:5ca:1ab:200::ff']);
    // The 100 forged MACs and 100 replies for another address carry the job's tag: counted against it.
    const invalid = Number(/\((\d+) invalid/.exec(r.stdout)![1]);
    expect(invalid).toBeGreaterThanOrEqual(200);
  });
});

describe('widescan run refuses bad input before starting anything', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['host bits set', '{prefix: "fd00:5ca:1ab:200::1/120", strategy: full}', /spec\.targets\[0\]\.prefix: .*did you mean fd00:5ca:1ab:200::\/120/],
    ['unknown field', '{prefix: "fd00:5ca:1ab:200::/120", stratgy: full}', /spec\.targets\[0\]\.stratgy: unknown field/],
    ['full too large', '{prefix: "2001:db8::/32", strategy: full}', /2\^96 addresses.*use random with a budget/],
  ];
  test.each(cases)('%s → exit 2 with the field, its line and the fix', async (_name, target, message) => {
    const file = writeJob(`apiVersion: widescan.dev/v1alpha1\nkind: WidescanJob\nmetadata: {name: bad}\nspec:\n  allowNonGlobal: true\n  targets:\n    - ${target}\n`);
    const r = await runCli(['run', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toContain(`${file}:7:`);
    expect(r.stderr).not.toContain('listener started'); // nothing was started
  });

  test('non-global space without allowNonGlobal is refused with the fix', async () => {
    const file = writeJob('apiVersion: widescan.dev/v1alpha1\nkind: WidescanJob\nmetadata: {name: ula}\nspec:\n  targets: [{prefix: "fd00::/120", strategy: full}]\n');
    const r = await runCli(['validate', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not global; set allowNonGlobal: true/);
  });

  test('usage errors exit 2, infrastructure errors exit 1', async () => {
    expect((await runCli(['run', 'examples/lab.yaml', '--output', 'peers.txt'])).code).toBe(2);
    expect((await runCli(['run', 'examples/lab.yaml', '--workers', '0'])).code).toBe(2);
    const ports = await runCli(['run', 'examples/lab.yaml', '--metrics-port', '65530', '--workers', '8']);
    expect(ports.code).toBe(2);
    expect(ports.stderr).toMatch(/--metrics-port 65530: the workers' ports 65532…65539 must stay below 65536/);
    expect((await runCli(['run', 'examples/lab.yaml', '--metrics-port', 'lots'])).code).toBe(2);
    expect((await runCli(['run', '/nonexistent/job.yaml'])).code).toBe(2);
    expect((await runCli(['frobnicate'])).code).toBe(2);
    const r = await runCli(['run', 'examples/lab.yaml', '--redis', 'redis://127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Redis at redis:\/\/127\.0\.0\.1:1 did not answer/);
  });

  test('a bad blocklist entry and a listener without its key are usage errors (exit 2) that say what is wrong', async () => {
    const blocklist = join(tmpdir(), `widescan-${process.pid}-bad-blocklist.txt`);
    writeFileSync(blocklist, 'fd00::/8\n2001:db8::1/32 # host bits\n');
    const bad = await runCli(['validate', 'examples/lab.yaml', '--blocklist', blocklist]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`${blocklist}: entry 2: 2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?`);
    const env = { WIDESCAN_NETWORK_KEY_FILE: '', WIDESCAN_NETWORK_KEY: '' };
    const keyless = await runCli(['listen'], { env });
    expect(keyless.code).toBe(2);
    expect(keyless.stderr).toMatch(/needs the network key/);
    const tokenless = await runCli(['listen', '--network-key-file', blocklist, '--bootstrap', 'http://127.0.0.1:1'], { env });
    expect(tokenless.code).toBe(2);
    expect(tokenless.stderr).toMatch(/--bootstrap needs --token-file/);
  });

  test('validate prints the plan and exits 0', async () => {
    const r = await runCli(['validate', 'examples/lab.yaml']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('70144 targets in 18 shards');
  });
});

// Sends 6 kinds of bad echo replies, 50 each, from the responder namespace to the scanner.
const INJECTOR = INJECTOR_PREAMBLE + `const scanner = 'fd00:5ca:1ab:f001::1';
const other = ipv6.addressToBytes(ipv6.parseAddress('fd00:5ca:1ab:200::1'));
const networkId = keys.networkIdOf(secret);
const make = (macKey, dst, mutate) => {
  const w = new probe.ProbeWriter({ networkId, jobTag: tag, macKey });
  const b = Buffer.alloc(w.packetBytes);
  w.write(b, 0, dst, 0, 0, 5, Date.now());
  b[0] = 129;
  mutate?.(b);
  return b;
};
const good = keys.macKeyFor(secret, tag);
const packets = [
  make(keys.macKeyFor(Buffer.from('not the network key'), tag), me),       // forged MAC
  make(good, other),                                                      // MAC for another address
  make(good, me, (b) => { b[8] = 0x58; }),                                // wrong magic
  make(good, me).subarray(0, 20),                                         // truncated
  make(good, me, (b) => { b[14] ^= 0xff; }),                              // wrong network id
  make(good, me, (b) => { b[13] = 3; }),                                  // unknown kind
];
const s = raw.createSocket({ addressFamily: raw.AddressFamily.IPv6, protocol: raw.Protocol.ICMPv6 });
let sent = 0;
for (let round = 0; round < 50; round++) {
  for (const p of packets) await new Promise((res) => s.send(p, 0, p.length, scanner, (err) => { if (!err) sent++; res(); }));
  await new Promise((r) => setTimeout(r, 10));
}
s.close();
console.log(sent);
`;
