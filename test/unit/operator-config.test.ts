import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { InvalidConfigError, MAX_CONFIG_BYTES, operatorConfigSchema, parseOperatorConfig, type OperatorConfig } from '../../operator/config.js';

const BASE = { namespace: 'widescan', image: 'ghcr.io/example/widescan:1.0' };

/** The problems of a config that must be refused. */
function problemsOf(text: string): string[] {
  try {
    parseOperatorConfig(text, 'config.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidConfigError);
    return (err as InvalidConfigError).problems;
  }
  throw new Error(`accepted: ${text.slice(0, 200)}`);
}

const withBase = (extra: Record<string, unknown>): string => JSON.stringify({ ...BASE, ...extra });

describe('parseOperatorConfig: defaults', () => {
  test('a minimal YAML config gets every default', () => {
    const config = parseOperatorConfig('namespace: widescan\nimage: ghcr.io/example/widescan:1.0\n', 'config.yaml');
    const expected: OperatorConfig = {
      ...BASE,
      imagePullPolicy: 'IfNotPresent',
      imagePullSecrets: [],
      window: 16,
      fullLimitBits: 32,
      blocklist: [],
      fallbackAfterSeconds: 120,
      statusIntervalSeconds: 2,
      workerMetricsPort: 9102,
      terminationGracePeriodSeconds: 30,
      workerEnv: [],
      listenerSelector: { 'app.kubernetes.io/name': 'widescan', 'app.kubernetes.io/component': 'listener' },
      pools: {
        gpu: {
          enabled: true,
          minReplicas: 0,
          maxReplicas: 4,
          gpusPerPod: 1,
          nodeSelector: {},
          tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
        },
        cpu: { enabled: true, minReplicas: 0, maxReplicas: 4 },
      },
    };
    expect(config).toStrictEqual(expected);
  });

  test('JSON is accepted and gives the same result as YAML', () => {
    const yaml = parseOperatorConfig('namespace: widescan\nimage: ghcr.io/example/widescan:1.0\npools: {cpu: {maxReplicas: 9}}\n', 'a.yaml');
    const json = parseOperatorConfig(JSON.stringify({ ...BASE, pools: { cpu: { maxReplicas: 9 } } }), 'a.json');
    expect(json).toStrictEqual(yaml);
    expect(json.pools.cpu.maxReplicas).toBe(9);
    expect(json.pools.gpu.maxReplicas).toBe(4);
  });

  test('a partly given pool keeps the defaults of the fields it leaves out', () => {
    const config = parseOperatorConfig(withBase({ pools: { gpu: { maxReplicas: 10, gpusPerPod: 2 } } }), 'c');
    expect(config.pools.gpu).toMatchObject({ enabled: true, minReplicas: 0, maxReplicas: 10, gpusPerPod: 2, nodeSelector: {} });
    expect(config.pools.gpu.tolerations).toHaveLength(1);
    expect(config.pools.cpu).toStrictEqual({ enabled: true, minReplicas: 0, maxReplicas: 4 });
  });

  test('given tolerations and nodeSelector replace the GPU defaults instead of merging', () => {
    const config = parseOperatorConfig(withBase({ pools: { gpu: { tolerations: [], nodeSelector: { gpu: 'a100' } } } }), 'c');
    expect(config.pools.gpu.tolerations).toEqual([]);
    expect(config.pools.gpu.nodeSelector).toEqual({ gpu: 'a100' });
  });

  test('default objects are fresh on every call (mutating one result does not leak into the next)', () => {
    const a = parseOperatorConfig(withBase({}), 'c');
    a.pools.gpu.tolerations!.push({ key: 'x', operator: 'Exists' });
    a.listenerSelector.extra = 'y';
    a.blocklist.push('2001:db8::/32');
    const b = parseOperatorConfig(withBase({}), 'c');
    expect(b.pools.gpu.tolerations).toHaveLength(1);
    expect(b.listenerSelector.extra).toBeUndefined();
    expect(b.blocklist).toEqual([]);
  });

  test('a full config is accepted; numeric quantities become strings', () => {
    const text = `
namespace: scans
image: registry.local/widescan@sha256:0123
imagePullPolicy: Always
imagePullSecrets: [{name: regcred}]
serviceAccountName: widescan-worker
window: 10000
fullLimitBits: 53
blocklist: ["2001:db8:dead::/48", "2a00::/16"]
fallbackAfterSeconds: 0
statusIntervalSeconds: 0.5
workerMetricsPort: 9200
terminationGracePeriodSeconds: 60
workerEnv:
  - {name: WIDESCAN_REDIS_URL, valueFrom: {secretKeyRef: {name: widescan-redis, key: url}}}
  - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
  - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1}}}
  - {name: LOG_LEVEL, value: debug}
listenerSelector: {app: listener}
pools:
  gpu:
    enabled: true
    minReplicas: 1
    maxReplicas: 8
    gpusPerPod: 2
    image: registry.local/widescan-gpu:1
    resources: {limits: {cpu: 4, memory: 8Gi}, requests: {cpu: 500m}}
    nodeSelector: {nvidia.com/gpu.present: "true"}
    tolerations: [{key: gpu, operator: Equal, value: "yes", effect: NoExecute, tolerationSeconds: 30}]
  cpu:
    enabled: false
    minReplicas: 2
    maxReplicas: 2
`;
    const config = parseOperatorConfig(text, 'full.yaml');
    expect(config.window).toBe(10000);
    expect(config.statusIntervalSeconds).toBe(0.5);
    expect(config.pools.gpu.resources).toEqual({ limits: { cpu: '4', memory: '8Gi' }, requests: { cpu: '500m' } });
    expect(config.workerEnv[2]!.valueFrom!.resourceFieldRef!.divisor).toBe('1');
    expect(config.pools.cpu).toEqual({ enabled: false, minReplicas: 2, maxReplicas: 2 });
    expect(config.listenerSelector).toEqual({ app: 'listener' });
    expect(config.pools.gpu.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });
  });

  test('legitimate YAML anchors and aliases work', () => {
    const text = `${'namespace: widescan\nimage: img\n'}pools:\n  gpu: {nodeSelector: &sel {zone: a}}\n  cpu: {nodeSelector: *sel}\n`;
    const config = parseOperatorConfig(text, 'c');
    expect(config.pools.cpu.nodeSelector).toEqual({ zone: 'a' });
  });

  test('the exported schema forbids unknown keys on every object it defines', () => {
    const open: string[] = [];
    const walk = (s: unknown, path: string): void => {
      if (s === null || typeof s !== 'object') return;
      const o = s as Record<string, unknown>;
      if (o.type === 'object' && o.properties && o.additionalProperties !== false) open.push(path);
      for (const [k, v] of Object.entries(o)) if (k !== 'default' && k !== 'enum') walk(v, `${path}/${k}`);
    };
    walk(operatorConfigSchema, '');
    expect(open).toEqual([]);
  });
});

describe('parseOperatorConfig: every bad field names its path', () => {
  // [what, extra fields, the path the problem must start with]
  const cases: [string, Record<string, unknown>, string][] = [
    ['namespace not a DNS label', { namespace: 'Widescan' }, 'namespace:'],
    ['namespace too long', { namespace: 'a'.repeat(64) }, 'namespace:'],
    ['namespace a number', { namespace: 7 }, 'namespace:'],
    ['image empty', { image: '' }, 'image:'],
    ['image with spaces', { image: 'a b' }, 'image:'],
    ['imagePullPolicy wrong case', { imagePullPolicy: 'always' }, 'imagePullPolicy:'],
    ['imagePullSecrets not a list', { imagePullSecrets: 'regcred' }, 'imagePullSecrets:'],
    ['imagePullSecrets entry without name', { imagePullSecrets: [{}] }, 'imagePullSecrets[0].name:'],
    ['imagePullSecrets bad name', { imagePullSecrets: [{ name: 'Reg Cred' }] }, 'imagePullSecrets[0].name:'],
    ['imagePullSecrets unknown key', { imagePullSecrets: [{ name: 'a', namespace: 'b' }] }, 'imagePullSecrets[0].namespace:'],
    ['serviceAccountName bad', { serviceAccountName: 'Bad_Name' }, 'serviceAccountName:'],
    ['window 0', { window: 0 }, 'window:'],
    ['window too big', { window: 10_001 }, 'window:'],
    ['window fractional', { window: 1.5 }, 'window:'],
    ['window a string', { window: '16' }, 'window:'],
    ['fullLimitBits 0', { fullLimitBits: 0 }, 'fullLimitBits:'],
    ['fullLimitBits 54', { fullLimitBits: 54 }, 'fullLimitBits:'],
    ['blocklist not a list', { blocklist: '2001:db8::/32' }, 'blocklist:'],
    ['blocklist number entry', { blocklist: [42] }, 'blocklist[0]:'],
    ['blocklist bad prefix', { blocklist: ['2001:db8::/32', 'nope'] }, 'blocklist[1]:'],
    ['blocklist host bits', { blocklist: ['2001:db8::1/64'] }, 'blocklist[0]:'],
    ['blocklist IPv4', { blocklist: ['10.0.0.0/8'] }, 'blocklist[0]:'],
    ['fallbackAfterSeconds negative', { fallbackAfterSeconds: -1 }, 'fallbackAfterSeconds:'],
    ['fallbackAfterSeconds too big', { fallbackAfterSeconds: 86_401 }, 'fallbackAfterSeconds:'],
    ['statusIntervalSeconds 0', { statusIntervalSeconds: 0 }, 'statusIntervalSeconds:'],
    ['statusIntervalSeconds a string', { statusIntervalSeconds: 'fast' }, 'statusIntervalSeconds:'],
    ['workerMetricsPort 0', { workerMetricsPort: 0 }, 'workerMetricsPort:'],
    ['workerMetricsPort 65536', { workerMetricsPort: 65_536 }, 'workerMetricsPort:'],
    ['terminationGracePeriodSeconds negative', { terminationGracePeriodSeconds: -1 }, 'terminationGracePeriodSeconds:'],
    ['workerEnv not a list', { workerEnv: { A: 'b' } }, 'workerEnv:'],
    ['workerEnv entry without name', { workerEnv: [{ value: 'x' }] }, 'workerEnv[0].name:'],
    ['workerEnv bad name', { workerEnv: [{ name: '1ABC' }] }, 'workerEnv[0].name:'],
    ['workerEnv value not a string', { workerEnv: [{ name: 'A', value: 1 }] }, 'workerEnv[0].value:'],
    ['workerEnv value and valueFrom', { workerEnv: [{ name: 'A', value: 'x', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }] }, 'workerEnv[0]:'],
    ['workerEnv empty valueFrom', { workerEnv: [{ name: 'A', valueFrom: {} }] }, 'workerEnv[0].valueFrom:'],
    ['workerEnv two sources', { workerEnv: [{ name: 'A', valueFrom: { fieldRef: { fieldPath: 'x' }, secretKeyRef: { name: 's', key: 'k' } } }] }, 'workerEnv[0].valueFrom:'],
    ['workerEnv secretKeyRef without key', { workerEnv: [{ name: 'A', valueFrom: { secretKeyRef: { name: 's' } } }] }, 'workerEnv[0].valueFrom.secretKeyRef.key:'],
    ['workerEnv unknown source', { workerEnv: [{ name: 'A', valueFrom: { vaultRef: {} } }] }, 'workerEnv[0].valueFrom.vaultRef:'],
    ['workerEnv duplicate', { workerEnv: [{ name: 'A', value: '1' }, { name: 'A', value: '2' }] }, 'workerEnv[1].name:'],
    ['workerEnv sets WIDESCAN_HARDWARE', { workerEnv: [{ name: 'WIDESCAN_HARDWARE', value: 'cpu' }] }, 'workerEnv[0].name:'],
    ['workerEnv sets WIDESCAN_METRICS_PORT', { workerEnv: [{ name: 'WIDESCAN_METRICS_PORT', value: '1' }] }, 'workerEnv[0].name:'],
    ['listenerSelector empty', { listenerSelector: {} }, 'listenerSelector:'],
    ['listenerSelector bad key', { listenerSelector: { 'bad key': 'x' } }, 'listenerSelector["bad key"]:'],
    ['listenerSelector bad value', { listenerSelector: { app: 'no spaces' } }, 'listenerSelector.app:'],
    ['listenerSelector value not a string', { listenerSelector: { app: 1 } }, 'listenerSelector.app:'],
    ['listenerSelector value too long', { listenerSelector: { app: 'a'.repeat(64) } }, 'listenerSelector.app:'],
    ['pools not a mapping', { pools: [] }, 'pools:'],
    ['unknown pool', { pools: { tpu: {} } }, 'pools.tpu:'],
    ['pool enabled a string', { pools: { gpu: { enabled: 'yes' } } }, 'pools.gpu.enabled:'],
    ['minReplicas negative', { pools: { cpu: { minReplicas: -1 } } }, 'pools.cpu.minReplicas:'],
    ['maxReplicas too big', { pools: { cpu: { maxReplicas: 1001 } } }, 'pools.cpu.maxReplicas:'],
    ['gpu max < min', { pools: { gpu: { minReplicas: 5, maxReplicas: 2 } } }, 'pools.gpu.maxReplicas'],
    ['cpu max < min', { pools: { cpu: { minReplicas: 1, maxReplicas: 0 } } }, 'pools.cpu.maxReplicas'],
    ['gpusPerPod 0', { pools: { gpu: { gpusPerPod: 0 } } }, 'pools.gpu.gpusPerPod:'],
    ['gpusPerPod 17', { pools: { gpu: { gpusPerPod: 17 } } }, 'pools.gpu.gpusPerPod:'],
    ['gpusPerPod on the CPU pool', { pools: { cpu: { gpusPerPod: 1 } } }, 'pools.cpu.gpusPerPod:'],
    ['pool image with spaces', { pools: { cpu: { image: 'x y' } } }, 'pools.cpu.image:'],
    ['bad quantity', { pools: { cpu: { resources: { limits: { cpu: 'lots' } } } } }, 'pools.cpu.resources.limits.cpu:'],
    ['negative quantity', { pools: { cpu: { resources: { requests: { cpu: -1 } } } } }, 'pools.cpu.resources.requests.cpu:'],
    ['negative quantity string', { pools: { cpu: { resources: { requests: { memory: '-1Gi' } } } } }, 'pools.cpu.resources.requests.memory:'],
    ['resources unknown key', { pools: { cpu: { resources: { claims: [] } } } }, 'pools.cpu.resources.claims:'],
    ['GPU limit set by hand', { pools: { gpu: { resources: { limits: { 'nvidia.com/gpu': 2 } } } } }, 'pools.gpu.resources.limits["nvidia.com/gpu"]:'],
    ['GPU request set by hand', { pools: { gpu: { resources: { requests: { 'nvidia.com/gpu': '1' } } } } }, 'pools.gpu.resources.requests["nvidia.com/gpu"]:'],
    ['toleration operator', { pools: { gpu: { tolerations: [{ key: 'a', operator: 'In' }] } } }, 'pools.gpu.tolerations[0].operator:'],
    ['toleration effect', { pools: { cpu: { tolerations: [{ key: 'a', effect: 'NoRun' }] } } }, 'pools.cpu.tolerations[0].effect:'],
    ['toleration unknown key', { pools: { cpu: { tolerations: [{ key: 'a', values: ['b'] }] } } }, 'pools.cpu.tolerations[0].values:'],
    ['nodeSelector not a mapping', { pools: { cpu: { nodeSelector: ['a'] } } }, 'pools.cpu.nodeSelector:'],
    ['unknown top-level key', { windw: 16 }, 'windw:'],
    ['unknown pool key', { pools: { cpu: { replicas: 3 } } }, 'pools.cpu.replicas:'],
  ];

  test.each(cases)('%s', (_what, extra, path) => {
    const problems = problemsOf(withBase(extra));
    expect(problems.some((p) => p.startsWith(path))).toBe(true);
  });

  test('missing namespace and image are both reported', () => {
    const problems = problemsOf('window: 4\n');
    expect(problems).toEqual(expect.arrayContaining([expect.stringMatching(/^namespace: required/), expect.stringMatching(/^image: required/)]));
  });

  test('messages say how to fix the field', () => {
    expect(problemsOf(withBase({ pools: { gpu: { minReplicas: 5, maxReplicas: 2 } } }))).toEqual([
      'pools.gpu.maxReplicas must be ≥ minReplicas (got min 5, max 2); raise maxReplicas or lower minReplicas',
    ]);
    expect(problemsOf(withBase({ window: 0 }))).toEqual(['window: must be an integer from 1 to 10000']);
    expect(problemsOf(withBase({ imagePullPolicy: 'sometimes' }))).toEqual(['imagePullPolicy: must be one of Always, IfNotPresent, Never']);
    expect(problemsOf(withBase({ windw: 1 }))[0]).toMatch(/^windw: unknown field; allowed here: namespace, image, .*window/);
    expect(problemsOf(withBase({ pools: { gpu: { resources: { limits: { 'nvidia.com/gpu': 2 } } } } }))[0]).toContain('use pools.gpu.gpusPerPod');
    expect(problemsOf(withBase({ workerEnv: [{ name: 'WIDESCAN_METRICS_PORT', value: '1' }] }))[0]).toContain('set workerMetricsPort instead');
    expect(problemsOf(withBase({ blocklist: ['2001:db8::1/64'] }))[0]).toContain('2001:db8::/64');
    expect(problemsOf(withBase({ namespace: 3 }))).toEqual(['namespace: must be a string']);
  });

  test('schema problems and semantic problems are reported together, each once', () => {
    const problems = problemsOf(withBase({ window: 0, blocklist: ['x'], pools: { cpu: { minReplicas: 3, maxReplicas: 1 } } }));
    expect(problems).toHaveLength(3);
    expect(problems.map((p) => p.split(/[: ]/)[0])).toEqual(['window', 'pools.cpu.maxReplicas', 'blocklist[0]']);
  });

  test('the error message names the source and lists every problem', () => {
    let message = '';
    try {
      parseOperatorConfig(withBase({ window: 0, fullLimitBits: 99 }), '/etc/widescan/operator.yaml');
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidConfigError);
      expect((err as InvalidConfigError).source).toBe('/etc/widescan/operator.yaml');
      message = (err as Error).message;
    }
    expect(message).toContain('/etc/widescan/operator.yaml');
    expect(message).toContain('window:');
    expect(message).toContain('fullLimitBits:');
  });
});

describe('parseOperatorConfig: hostile and malformed input', () => {
  test('a billion-laughs alias bomb is refused quickly', () => {
    const lol = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) lol.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
    const started = Date.now();
    const problems = problemsOf(`namespace: x\nimage: y\n${lol.join('\n')}\n`);
    expect(problems[0]).toMatch(/^\(document\): invalid YAML: .*alias/i);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  test('input over 1 MiB is refused before parsing; size counts bytes, not characters', () => {
    const big = `namespace: x\nimage: y\n#${'x'.repeat(MAX_CONFIG_BYTES)}\n`;
    expect(problemsOf(big)[0]).toMatch(/larger than 1048576 bytes/);
    const multibyte = `namespace: x\nimage: y\n#${'é'.repeat(MAX_CONFIG_BYTES / 2 + 1)}\n`;
    expect(multibyte.length).toBeLessThan(MAX_CONFIG_BYTES);
    expect(problemsOf(multibyte)[0]).toMatch(/larger than/);
  });

  test('a long but valid blocklist under the limit is accepted', () => {
    const blocklist = Array.from({ length: 5000 }, (_, i) => `2001:db8:${i.toString(16)}::/48`);
    expect(parseOperatorConfig(withBase({ blocklist }), 'c').blocklist).toHaveLength(5000);
  });

  test('deep nesting is refused as an error, not a crash', () => {
    const n = 5000;
    const problems = problemsOf(`namespace: x\nimage: y\nwindow: ${'['.repeat(n)}${']'.repeat(n)}\n`);
    expect(problems.length).toBeGreaterThan(0);
  });

  test.each([
    ['an empty file', ''],
    ['only a comment', '# nothing\n'],
    ['null', 'null'],
    ['a list', '- namespace: x\n'],
    ['a scalar', 'widescan'],
    ['a JSON string', '"widescan"'],
  ])('%s is not a config', (_what, text) => {
    expect(problemsOf(text)).toEqual(['(document): the config is a mapping with at least namespace and image']);
  });

  test.each([
    ['duplicate keys', 'namespace: a\nnamespace: b\nimage: y\n', /unique/],
    ['several documents', 'namespace: a\nimage: y\n---\nnamespace: b\n', /multiple documents/],
    ['bad indentation', 'namespace: a\n  image: y\n', /invalid YAML/],
    ['unclosed flow', 'namespace: a\nimage: [y\n', /invalid YAML/],
    ['tab indentation', 'pools:\n\tgpu: {}\n', /invalid YAML/],
  ])('%s: invalid YAML with a message', (_what, text, pattern) => {
    const problems = problemsOf(text);
    expect(problems[0]).toMatch(/^\(document\): /);
    expect(problems.join('\n')).toMatch(pattern);
  });

  test('__proto__ is an unknown field and pollutes nothing', () => {
    const problems = problemsOf('namespace: x\nimage: y\n__proto__: {polluted: true}\npools: {__proto__: {gpu: 1}}\n');
    expect(problems).toEqual(expect.arrayContaining([expect.stringMatching(/^__proto__: unknown field/), expect.stringMatching(/^pools\.__proto__: unknown field/)]));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const json = problemsOf('{"namespace": "x", "image": "y", "__proto__": {"window": 0}}');
    expect(json[0]).toMatch(/^__proto__: unknown field/);
  });

  test('a YAML merge key is not a merge but an unknown field', () => {
    expect(problemsOf('namespace: x\nimage: y\n<<: {window: 3}\n')[0]).toMatch(/^\["<<"\]: unknown field/);
  });

  test('tagged and special values are refused as wrong types', () => {
    expect(problemsOf('namespace: !!binary aGVsbG8=\nimage: y\n')).toEqual(['namespace: must be a string']);
    expect(problemsOf('namespace: x\nimage: y\nwindow: .inf\n')[0]).toMatch(/^window: /);
    expect(problemsOf('namespace: x\nimage: y\nwindow: .nan\n')[0]).toMatch(/^window: /);
    expect(problemsOf('namespace: x\nimage: y\nwindow: 1e400\n')[0]).toMatch(/^window: /);
    expect(problemsOf('namespace: x\nimage: y\nwindow: 9007199254740993\n')[0]).toMatch(/^window: /);
    expect(problemsOf('namespace: x\nimage: y\nwindow: ~\n')[0]).toMatch(/^window: /);
    expect(problemsOf('namespace: x\nimage: y\npools: {gpu: {enabled: yes}}\n')[0]).toMatch(/^pools\.gpu\.enabled: must be true or false/);
  });

  test('property: any JSON value either parses to a config within the bounds or fails with InvalidConfigError', () => {
    const field = fc.oneof(
      fc.constantFrom('namespace', 'image', 'window', 'fullLimitBits', 'blocklist', 'workerEnv', 'pools', 'listenerSelector', 'workerMetricsPort'),
      fc.string({ maxLength: 8 }),
    );
    const value = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom<unknown>('x', 16, 0, -1, [], {}, { gpu: {} }, ['2001:db8::/32']));
    fc.assert(
      fc.property(fc.dictionary(field, value, { maxKeys: 6 }), fc.boolean(), (extra, withRequired) => {
        const text = JSON.stringify(withRequired ? { ...BASE, ...extra } : extra);
        try {
          const c = parseOperatorConfig(text, 'prop');
          expect(c.window).toBeGreaterThanOrEqual(1);
          expect(c.window).toBeLessThanOrEqual(10_000);
          expect(c.pools.gpu.minReplicas).toBeLessThanOrEqual(c.pools.gpu.maxReplicas);
          expect(c.pools.cpu.minReplicas).toBeLessThanOrEqual(c.pools.cpu.maxReplicas);
          expect(Object.keys(c.listenerSelector).length).toBeGreaterThan(0);
        } catch (err) {
          expect(err).toBeInstanceOf(InvalidConfigError);
          expect((err as InvalidConfigError).problems.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('property: arbitrary text never throws anything but InvalidConfigError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200, unit: 'binary' }), (text) => {
        try {
          parseOperatorConfig(text, 'prop');
        } catch (err) {
          expect(err).toBeInstanceOf(InvalidConfigError);
        }
      }),
      { numRuns: 300 },
    );
  });
});
