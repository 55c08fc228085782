import { describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { parsePrefix } from '../../lib/core/cidr.js';
import {
  compileJob,
  formatProblem,
  InvalidJobError,
  loadJob,
  MAX_JOB_BYTES,
  parseJobText,
  validateManifest,
  type Problem,
} from '../../lib/core/job.js';
import { jobTagOf } from '../../lib/core/keys.js';

const HEAD = `apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata:
  name: t
spec:
`; // the spec's fields start on line 6

const MINIMAL = `${HEAD}  targets:
    - prefix: "2a00:1::/120"
      strategy: full
`;

/** The problems of a job text that must be refused. */
function problemsOf(text: string, options: Parameters<typeof loadJob>[2] = {}): Problem[] {
  try {
    loadJob(text, 'job.yaml', options);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidJobError);
    return (err as InvalidJobError).problems;
  }
  throw new Error('expected an InvalidJobError');
}

describe('a valid manifest', () => {
  test('examples/lab.yaml loads: 70144 targets, 18 shards, 16 planned excluded', () => {
    const job = loadJob(readFileSync(new URL('../../examples/lab.yaml', import.meta.url), 'utf8'), 'examples/lab.yaml');
    expect(job.id).toBe('lab');
    expect(job.space.size).toBe(4096 + 256 + 65536 + 256);
    expect(job.space.size).toBe(70144);
    expect(job.totalShards).toBe(18);
    expect(job.space.plannedExcluded).toBe(16);
    expect(job.spec).toMatchObject({ allowNonGlobal: true, rate: { packetsPerSecond: 20000 }, shardSize: 4096, hardware: 'auto' });
    expect(job.spec.probe).toEqual({ hopLimit: 64, retries: 0, replyTimeoutSeconds: 2, contact: 'https://example.org/widescan-lab' });
  });

  test('schema defaults are applied', () => {
    const job = loadJob(MINIMAL);
    expect(job.spec).toEqual({
      targets: [{ prefix: '2a00:1::/120', strategy: 'full' }],
      allowNonGlobal: false,
      rate: { packetsPerSecond: 10000 },
      hardware: 'auto',
      shardSize: 65536,
      probe: { hopLimit: 64, retries: 0, replyTimeoutSeconds: 5 },
      suspend: false,
    });
    expect(job.totalShards).toBe(1);
    // A given object keeps its given fields and gets the missing defaults.
    const partial = loadJob(`${HEAD}  rate: {}\n  probe: {retries: 2}\n  networkKeySecretRef: {name: net}\n  targets: [{prefix: "2a00:1::/120", strategy: full}]\n`);
    expect(partial.spec.rate).toEqual({ packetsPerSecond: 10000 });
    expect(partial.spec.probe).toEqual({ hopLimit: 64, retries: 2, replyTimeoutSeconds: 5 });
    expect(partial.spec.networkKeySecretRef).toEqual({ name: 'net', key: 'key' });
  });

  test('a JSON document is YAML and loads', () => {
    const json = JSON.stringify({
      apiVersion: 'widescan.dev/v1alpha1',
      kind: 'WidescanJob',
      metadata: { name: 'j', namespace: 'scans' },
      spec: { targets: [{ prefix: '2a00:1::/56', strategy: 'lowbyte', subnetLength: 64, hosts: 2 }], shardSize: 256 },
    });
    const job = loadJob(json);
    expect(job.id).toBe('scans/j');
    expect(job.space.size).toBe(512);
    expect(job.totalShards).toBe(2);
  });

  test('CRLF line ends, a byte-order mark, metadata labels and a status block are accepted', () => {
    expect(loadJob(MINIMAL.replace(/\n/g, '\r\n')).space.size).toBe(256);
    expect(loadJob(`\ufeff${MINIMAL}`).space.size).toBe(256);
    const withExtras = MINIMAL.replace('  name: t\n', '  name: t\n  labels: {team: net}\n  uid: 0e6f1c1a\n') + 'status: {phase: Running}\n';
    const job = loadJob(withExtras);
    expect(job.uid).toBe('0e6f1c1a');
    expect(job.manifest.metadata.labels).toEqual({ team: 'net' });
  });

  test('the same manifest compiled twice with the same uid (or seed) scans in the same order', () => {
    const order = (text: string) => {
      const job = loadJob(text);
      return { tag: job.tag, seed: job.seed, order: Array.from({ length: 256 }, (_, p) => job.space.addressAt(job.space.indexAt(p))) };
    };
    const withUid = MINIMAL.replace('  name: t\n', '  name: t\n  uid: 1234-abcd\n');
    const a = order(withUid);
    expect(order(withUid)).toEqual(a);
    expect(a.seed).toBe('1234-abcd');
    expect(a.tag).toBe(jobTagOf('1234-abcd'));
    const other = order(withUid.replace('1234-abcd', '1234-abce'));
    expect(other.order).not.toEqual(a.order);
    expect(other.tag).not.toBe(a.tag);
    // An explicit seed decides the order whatever the uid.
    const seeded = (uid: string) => order(withUid.replace('1234-abcd', uid).replace('spec:\n', 'spec:\n  seed: fixed\n'));
    expect(seeded('u1').order).toEqual(seeded('u2').order);
    expect(seeded('u1').tag).not.toBe(seeded('u2').tag);
    // Without a uid each compilation gets a fresh one.
    const x = loadJob(MINIMAL);
    const y = loadJob(MINIMAL);
    expect(x.uid).not.toBe(y.uid);
    expect(x.uid).toMatch(/^[0-9a-f-]{36}$/);
  });

  test('compileJob takes an already-parsed manifest (the operator path) and applies a blocklist', () => {
    const manifest = validateManifest({
      apiVersion: 'widescan.dev/v1alpha1',
      kind: 'WidescanJob',
      metadata: { name: 'op', namespace: 'ns', uid: 'u-1' },
      spec: { targets: [{ prefix: '2a00:1::/120', strategy: 'full' }], exclude: ['2a00:1::/124'] },
    });
    expect(manifest.spec.shardSize).toBe(65536);
    const job = compileJob(manifest, { blocklist: [parsePrefix('2a00:1::80/121')] });
    expect(job.id).toBe('ns/op');
    expect(job.space.plannedExcluded).toBe(16 + 128);
    expect(() => compileJob(manifest, { blocklist: [parsePrefix('2a00::/16')] })).toThrow(
      "spec.targets[0].prefix: prefix 2a00:1::/120 is entirely covered by the operator's blocklist 2a00::/16; it cannot be scanned",
    );
    expect(() => compileJob(manifest, { fullLimitBits: 7 })).toThrow(/2\^8 addresses \(the limit is 2\^7\)/);
  });
});

describe('bad manifests', () => {
  const target = (fields: string) => `${HEAD}  targets:\n    - prefix: "2a00:1::/48"\n${fields}`;
  // [name, text, path, message fragment, line]
  const cases: [string, string, string, string | RegExp, number | undefined][] = [
    ['an unknown field (typo)', target('      stratgy: full\n'), 'spec.targets[0].stratgy', 'unknown field', 8],
    ['an unknown spec field', `${HEAD}  shardsize: 4096\n  targets: [{prefix: "2a00:1::/120", strategy: full}]\n`, 'spec.shardsize', 'unknown field', 6],
    ['an unknown top-level field', `${MINIMAL}extra: 1\n`, 'extra', 'unknown field', 9],
    ['a YAML merge key (not in YAML 1.2)', `${HEAD}  <<: {suspend: true}\n  targets: [{prefix: "2a00:1::/120", strategy: full}]\n`, 'spec.<<', 'unknown field', 6],
    ['a __proto__ key', `${HEAD}  __proto__: {suspend: true}\n  targets: [{prefix: "2a00:1::/120", strategy: full}]\n`, 'spec.__proto__', 'unknown field', 6],
    ['a wrong strategy', target('      strategy: all\n'), 'spec.targets[0].strategy', 'must be one of full, lowbyte, random', 8],
    ['a wrong hardware', MINIMAL.replace('spec:\n', 'spec:\n  hardware: fpga\n'), 'spec.hardware', 'must be one of auto, gpu, cpu', 6],
    ['a string shardSize', MINIMAL.replace('spec:\n', 'spec:\n  shardSize: big\n'), 'spec.shardSize', 'must be integer', 6],
    ['a fractional rate', MINIMAL.replace('spec:\n', 'spec:\n  rate:\n    packetsPerSecond: 1.5\n'), 'spec.rate.packetsPerSecond', 'must be integer', 7],
    ['an infinite budget', target('      strategy: random\n      budget: 1e400\n'), 'spec.targets[0].budget', 'must be integer', 9],
    ['a budget above 2^53', target('      strategy: random\n      budget: 9007199254740994\n'), 'spec.targets[0].budget', 'must be <= 9007199254740992', 9],
    ['a yes/no boolean (YAML 1.1)', MINIMAL.replace('spec:\n', 'spec:\n  allowNonGlobal: yes\n'), 'spec.allowNonGlobal', 'must be boolean', 6],
    ['a numeric prefix', `${HEAD}  targets:\n    - prefix: 42\n      strategy: full\n`, 'spec.targets[0].prefix', 'must be string', 7],
    ['a null prefix', `${HEAD}  targets:\n    - prefix:\n      strategy: full\n`, 'spec.targets[0].prefix', 'must be string', 7],
    ['targets as a map', `${HEAD}  targets: {prefix: "2a00::/120", strategy: full}\n`, 'spec.targets', 'must be array', 6],
    ['targets as a binary tag', `${HEAD}  targets: !!binary aGVsbG8=\n`, 'spec.targets', 'must be array', 6],
    ['hopLimit out of range', MINIMAL.replace('spec:\n', 'spec:\n  probe: {hopLimit: 300}\n'), 'spec.probe.hopLimit', 'must be <= 255', 6],
    ['shardSize too small', MINIMAL.replace('spec:\n', 'spec:\n  shardSize: 3\n'), 'spec.shardSize', 'must be >= 256', 6],
    ['a long contact', MINIMAL.replace('spec:\n', `spec:\n  probe: {contact: "${'x'.repeat(201)}"}\n`), 'spec.probe.contact', 'must NOT have more than 200 characters', 6],
    ['an empty seed', MINIMAL.replace('spec:\n', 'spec:\n  seed: ""\n'), 'spec.seed', 'must NOT have fewer than 1 characters', 6],
    ['missing targets', `${HEAD}  rate: {packetsPerSecond: 5}\n`, 'spec', 'missing required field targets', 6],
    ['missing spec', 'apiVersion: widescan.dev/v1alpha1\nkind: WidescanJob\nmetadata: {name: t}\n', '(document)', 'missing required field spec', 1],
    ['empty targets', `${HEAD}  targets: []\n`, 'spec.targets', 'must NOT have fewer than 1 items', 6],
    [
      '257 targets',
      `${HEAD}  targets:\n${Array.from({ length: 257 }, (_, i) => `    - {prefix: "2a00:${(i + 1).toString(16)}::/120", strategy: full}\n`).join('')}`,
      'spec.targets',
      'must NOT have more than 256 items',
      7,
    ],
    ['a prefix with host bits', target('      strategy: full\n').replace('2a00:1::/48', '2001:db8::1/32'), 'spec.targets[0].prefix', '2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?', 7],
    ['an IPv4 prefix', target('      strategy: full\n').replace('2a00:1::/48', '10.0.0.0/8'), 'spec.targets[0].prefix', /"10\.0\.0\.0" is not an IPv6 address/, 7],
    ['a prefix without a length', target('      strategy: full\n').replace('2a00:1::/48', '2a00:1::'), 'spec.targets[0].prefix', 'has no prefix length', 7],
    ['a prefix with a NUL', target('      strategy: full\n').replace('2a00:1::/48', '2a00:1::/4\\u0000'), 'spec.targets[0].prefix', 'not a decimal integer', 7],
    ['a 65-character prefix', target('      strategy: full\n').replace('2a00:1::/48', `${'1:'.repeat(31)}:/64`), 'spec.targets[0].prefix', 'must NOT have more than 64 characters', 7],
    ['a bad exclude', MINIMAL.replace('spec:\n', 'spec:\n  exclude:\n    - "2a00:1::/120"\n    - "2a00:1::1/64"\n'), 'spec.exclude[1]', 'did you mean 2a00:1::/64?', 8],
    ['random without budget', target('      strategy: random\n'), 'spec.targets[0].strategy', 'strategy random needs budget', 8],
    ['budget on a full target', target('      strategy: full\n      budget: 5\n'), 'spec.targets[0].budget', 'does not apply to strategy full; remove it', 9],
    ['hosts on a random target', target('      strategy: random\n      budget: 5\n      hosts: 3\n'), 'spec.targets[0].hosts', 'does not apply to strategy random; remove it', 10],
    ['lowbyte without hosts', target('      strategy: lowbyte\n      subnetLength: 64\n'), 'spec.targets[0].strategy', 'strategy lowbyte needs subnetLength and hosts', 8],
    ['lowbyte hosts not fitting', target('      strategy: lowbyte\n      subnetLength: 126\n      hosts: 4\n'), 'spec.targets[0].hosts', 'hosts 4 does not fit a /126 subnet (interface IDs 1..3)', 10],
    ['full above the limit', target('      strategy: full\n'), 'spec.targets[0].strategy', 'prefix 2a00:1::/48 with strategy full is 2^80 addresses (the limit is 2^32); use random with a budget', 8],
    ['budget above the prefix size', target('      strategy: random\n      budget: 257\n').replace('2a00:1::/48', '2a00:1::/120'), 'spec.targets[0].budget', 'budget 257 exceeds the 256 addresses of 2a00:1::/120', 9],
    ['documentation space without allowNonGlobal', target('      strategy: random\n      budget: 9\n').replace('2a00:1::/48', '2001:db8::/32'), 'spec.targets[0].prefix', 'documentation space, which is not global; set allowNonGlobal: true', 7],
    ['a target excluded whole', MINIMAL.replace('spec:\n', 'spec:\n  exclude: ["2a00::/16"]\n'), 'spec.targets[0].prefix', 'entirely excluded by spec.exclude[0] 2a00::/16', 8],
    ['a wrong apiVersion', MINIMAL.replace('v1alpha1', 'v1'), 'apiVersion', 'must be "widescan.dev/v1alpha1"', 1],
    ['a wrong kind', MINIMAL.replace('kind: WidescanJob', 'kind: Job'), 'kind', 'must be "WidescanJob"', 2],
    ['an uppercase name', MINIMAL.replace('name: t', 'name: My_Job'), 'metadata.name', 'must be a lowercase DNS name', 4],
    ['a 64-character name', MINIMAL.replace('name: t', `name: ${'a'.repeat(64)}`), 'metadata.name', 'must NOT have more than 63 characters', 4],
    ['a missing name', MINIMAL.replace('name: t', 'namespace: t'), 'metadata', 'missing required field name', 4],
    ['a numeric metadata', MINIMAL.replace('metadata:\n  name: t\n', 'metadata: 5\n'), 'metadata', 'must be object', 3],
    ['an empty uid', MINIMAL.replace('name: t', 'name: t\n  uid: ""'), 'metadata.uid', 'must NOT have fewer than 1 characters', 5],
    ['a YAML syntax error', MINIMAL.replace('spec:\n', 'spec:\n  shardSize: 5: 6\n'), '(document)', 'invalid YAML: Nested mappings are not allowed in compact mappings', 6],
    ['a tab indentation', MINIMAL.replace('spec:\n', 'spec:\n\tsuspend: true\n'), '(document)', 'invalid YAML: Tabs are not allowed as indentation', 6],
    ['duplicate keys', `${MINIMAL}  shardSize: 4096\n  shardSize: 8192\n`, '(document)', 'invalid YAML: Map keys must be unique', 10],
    ['two documents', `${MINIMAL}---\n${MINIMAL}`, '(document)', 'invalid YAML: Source contains multiple documents', 9],
    ['a list', '- apiVersion: widescan.dev/v1alpha1\n- kind: WidescanJob\n', '(document)', 'a job is a YAML mapping with apiVersion, kind, metadata and spec', undefined],
    ['a scalar', 'hello\n', '(document)', 'a job is a YAML mapping', undefined],
    ['an empty file', '', '(document)', 'a job is a YAML mapping', undefined],
    ['null', 'null\n', '(document)', 'a job is a YAML mapping', undefined],
  ];

  test.each(cases)('%s', (_name, text, path, message, line) => {
    const problems = problemsOf(text);
    const p = problems.find((q) => q.path === path);
    expect({ paths: problems.map((q) => q.path), found: p !== undefined }).toEqual({ paths: expect.arrayContaining([path]), found: true });
    if (typeof message === 'string') expect(p!.message).toContain(message);
    else expect(p!.message).toMatch(message);
    expect(p!.line).toBe(line);
  });

  test('every schema problem is reported at once, each with its line', () => {
    const text = `${HEAD}  shardSize: big\n  allowNonGlobal: 1\n  hardware: fpga\n  targets:\n    - prefix: "2a00::/120"\n      stratgy: full\n`;
    expect(problemsOf(text)).toEqual([
      { path: 'spec.targets[0]', message: 'missing required field strategy', line: 10 },
      { path: 'spec.targets[0].stratgy', message: 'unknown field', line: 11 },
      { path: 'spec.allowNonGlobal', message: 'must be boolean', line: 7 },
      { path: 'spec.hardware', message: 'must be one of auto, gpu, cpu', line: 8 },
      { path: 'spec.shardSize', message: 'must be integer', line: 6 },
    ]);
  });

  test('a YAML alias bomb ("billion laughs") is refused cleanly and fast', () => {
    const levels = 'abcdefghi'.split('');
    const bomb = levels
      .map((l, i) => (i === 0 ? `${l}: &${l} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]` : `${l}: &${l} [${Array(9).fill(`*${levels[i - 1]}`).join(',')}]`))
      .join('\n');
    const t0 = performance.now();
    const problems = problemsOf(`${bomb}\n`);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(problems).toEqual([{ path: '(document)', message: expect.stringMatching(/^invalid YAML: .*alias/) }]);
    // A bomb inside a real manifest's field too.
    const inSpec = MINIMAL.replace('spec:\n', `spec:\n  seed: &s x\n  probe: {contact: *s}\n`).replace('metadata:', `x: &x [1,1,1,1,1,1,1,1,1,1]\ny: &y [${Array(10).fill('*x').join(',')}]\nz: &z [${Array(10).fill('*y').join(',')}]\nmetadata:`);
    expect(problemsOf(inSpec)[0]!.message).toMatch(/alias/);
  });

  test('deep nesting is refused without crashing', () => {
    const problems = problemsOf(`${HEAD}  targets: ${'['.repeat(5000)}${']'.repeat(5000)}\n`);
    expect(problems[0]!.path).toBe('(document)');
  });

  test('files over 1 MiB are refused before parsing, counted in bytes', () => {
    expect(MAX_JOB_BYTES).toBe(1 << 20);
    const big = `${MINIMAL}# ${'x'.repeat(2 << 20)}\n`;
    const t0 = performance.now();
    expect(problemsOf(big)).toEqual([{ path: '(document)', message: 'file is larger than 1048576 bytes; a job lists prefixes, not addresses' }]);
    expect(performance.now() - t0).toBeLessThan(500);
    // 2^19 + 1 two-byte characters: under 1 MiB characters, over 1 MiB bytes.
    expect(problemsOf(`${MINIMAL}# ${'é'.repeat((1 << 19) + 1)}\n`)[0]!.message).toMatch(/larger than 1048576 bytes/);
    // Just under the limit still parses.
    const padded = `${MINIMAL}# `;
    expect(loadJob(`${padded}${'x'.repeat(MAX_JOB_BYTES - Buffer.byteLength(padded) - 1)}\n`).space.size).toBe(256);
  });
});

describe('formatProblem and InvalidJobError', () => {
  test('file:line: path: message', () => {
    const p: Problem = { path: 'spec.targets[0].prefix', message: 'bad', line: 7 };
    expect(formatProblem(p, 'job.yaml')).toBe('job.yaml:7: spec.targets[0].prefix: bad');
    expect(formatProblem({ path: 'spec', message: 'bad' }, 'job.yaml')).toBe('job.yaml: spec: bad');
    expect(formatProblem(p)).toBe('line 7: spec.targets[0].prefix: bad');
    expect(formatProblem({ path: 'spec', message: 'bad' })).toBe('spec: bad');
  });

  test('the error message lists every problem, one a line, with the source name', () => {
    try {
      loadJob(`${HEAD}  shardSize: 1\n  targets: []\n`, 'scans/lab.yaml');
      throw new Error('expected an InvalidJobError');
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidJobError);
      const e = err as InvalidJobError;
      expect(e.name).toBe('InvalidJobError');
      expect(e.source).toBe('scans/lab.yaml');
      expect(e.message.split('\n').sort()).toEqual([
        'scans/lab.yaml:6: spec.shardSize: must be >= 256',
        'scans/lab.yaml:7: spec.targets: must NOT have fewer than 1 items',
      ]);
    }
  });

  test('parseJobText locates paths: a missing field at its parent, an unknown path at the document', () => {
    const { locate } = parseJobText(MINIMAL.replace('spec:\n', 'spec:\n  exclude:\n    - "2a00:1::/124"\n'));
    expect(locate('spec.exclude[0]')).toBe(7);
    expect(locate('spec.targets[0].strategy')).toBe(10);
    expect(locate('spec.targets[0].hosts')).toBe(9);
    expect(locate('metadata.name')).toBe(4);
    expect(locate('(document)')).toBe(1);
  });
});
