import { describe, expect, test } from '@jest/globals';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { CRD_HEADER, crdYaml } from '../../lib/core/crd-yaml.js';
import { parseJobText } from '../../lib/core/job.js';
import { customResourceDefinition, GROUP, KIND, PLURAL, targetSchema, VERSION } from '../../lib/core/schema.js';

const FILE = new URL('../../crds/widescanjobs.widescan.dev.yaml', import.meta.url);
const committed = readFileSync(FILE, 'utf8');
const crd = customResourceDefinition();
const version = crd.spec.versions[0]!;
const root = version.schema.openAPIV3Schema as unknown as Schema;

interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: unknown;
  required?: string[];
  default?: unknown;
  enum?: unknown[];
  [k: string]: unknown;
}

/** Every schema node with its JSON path (`.spec.targets[]`), depth first. */
function nodes(s: Schema, path = ''): [string, Schema][] {
  const out: [string, Schema][] = [[path || '.', s]];
  for (const [k, v] of Object.entries(s.properties ?? {})) out.push(...nodes(v, `${path}.${k}`));
  if (s.items) out.push(...nodes(s.items, `${path}[]`));
  return out;
}

describe('crds/widescanjobs.widescan.dev.yaml', () => {
  test('is what lib/core/schema.ts renders to', () => {
    if (committed !== crdYaml()) {
      throw new Error('crds/widescanjobs.widescan.dev.yaml is out of date with lib/core/schema.ts: run npm run gen:crd and commit the result');
    }
    expect(committed.split('\n')[0]).toBe(CRD_HEADER);
    expect(CRD_HEADER).toBe('# Generated from lib/core/schema.ts by `npm run gen:crd`; do not edit.');
  });

  test('parses back to the CRD object, with no YAML anchors or aliases', () => {
    expect(parse(committed)).toEqual(crd);
    expect(committed).not.toMatch(/(^|\s)[&*][A-Za-z0-9]+\s*$/m);
  });
});

describe('the CRD is structurally sane for Kubernetes', () => {
  test('names, scope, one served storage version with a status subresource', () => {
    expect(crd.apiVersion).toBe('apiextensions.k8s.io/v1');
    expect(crd.metadata.name).toBe(`${PLURAL}.${GROUP}`);
    expect(crd.spec.names).toMatchObject({ kind: KIND, plural: PLURAL, singular: 'widescanjob', listKind: `${KIND}List` });
    expect(crd.spec.names.shortNames).toContain('wsj');
    for (const n of [crd.spec.names.plural, crd.spec.names.singular, ...crd.spec.names.shortNames]) expect(n).toMatch(/^[a-z][a-z0-9]*$/);
    expect(crd.spec.scope).toBe('Namespaced');
    expect(crd.spec.versions.map((v) => [v.name, v.served, v.storage])).toEqual([[VERSION, true, true]]);
    expect(version.subresources).toEqual({ status: {} });
  });

  test('every schema node has a type; no $ref; no additionalProperties next to properties', () => {
    const all = nodes(root);
    expect(all.length).toBeGreaterThan(40);
    for (const [path, s] of all) {
      expect({ path, type: typeof s.type }).toEqual({ path, type: 'string' });
      expect(['object', 'array', 'string', 'integer', 'number', 'boolean']).toContain(s.type);
      if (s.properties) expect({ path, additionalProperties: s.additionalProperties }).toEqual({ path, additionalProperties: undefined });
      if (s.type === 'array') expect({ path, items: s.items !== undefined }).toEqual({ path, items: true });
      if (s.required) for (const r of s.required) expect({ path, required: r, declared: r in (s.properties ?? {}) }).toEqual({ path, required: r, declared: true });
    }
    expect(JSON.stringify(root)).not.toMatch(/"\$ref"|"oneOf"|"anyOf"|"allOf"|"not"|"const"|"nullable"/);
    // Only type: object may be said of metadata at the root.
    expect(root.properties!.metadata).toEqual({ type: 'object' });
  });

  test('defaults validate against their own node (the API server refuses a CRD whose defaults do not)', () => {
    const ajv = new Ajv({ strict: false });
    (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
    const defaulted = nodes(root).filter(([, s]) => s.default !== undefined);
    expect(defaulted.map(([p]) => p)).toEqual(expect.arrayContaining(['.spec.rate', '.spec.rate.packetsPerSecond', '.spec.hardware', '.spec.shardSize', '.spec.probe.hopLimit']));
    for (const [path, s] of defaulted) {
      const { default: value, ...rest } = s;
      expect({ path, valid: ajv.validate(rest, value) }).toEqual({ path, valid: true });
    }
  });

  test('list-map keys are required fields of the items', () => {
    for (const [path, s] of nodes(root).filter(([, n]) => n['x-kubernetes-list-type'] === 'map')) {
      for (const key of s['x-kubernetes-list-map-keys'] as string[]) expect({ path, key, required: s.items!.required!.includes(key) }).toEqual({ path, key, required: true });
    }
  });

  test("the CEL rules mention only the target's own fields", () => {
    const fields = Object.keys(targetSchema.properties);
    for (const { rule, message } of targetSchema['x-kubernetes-validations']) {
      expect(message.length).toBeGreaterThan(10);
      const used = [...rule.matchAll(/self\.([A-Za-z]+)/g)].map((m) => m[1]);
      expect(used.length).toBeGreaterThan(0);
      for (const f of used) expect(fields).toContain(f);
    }
  });

  test("printer columns' jsonPaths exist in the schema, with matching types", () => {
    const columns = version.additionalPrinterColumns;
    expect(columns.map((c) => c.name)).toEqual(['Phase', 'Progress', 'Probes', 'Peers', 'Age']);
    const byPath = new Map(nodes(root));
    for (const c of columns) {
      expect(['integer', 'number', 'string', 'boolean', 'date']).toContain(c.type);
      if (c.jsonPath.startsWith('.metadata.')) {
        // ObjectMeta is not described by the CRD; the API server always sets these.
        expect(['.metadata.creationTimestamp', '.metadata.name', '.metadata.namespace']).toContain(c.jsonPath);
        continue;
      }
      const node = byPath.get(c.jsonPath);
      expect({ column: c.name, exists: node !== undefined }).toEqual({ column: c.name, exists: true });
      expect({ column: c.name, type: node!.type }).toEqual({ column: c.name, type: c.type === 'date' ? 'string' : c.type });
    }
  });

  test('the committed schema accepts examples/lab.yaml and refuses what the API server would refuse', () => {
    const ajv = new Ajv({ strict: false, allErrors: true });
    (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
    const schema = parse(committed).spec.versions[0].schema.openAPIV3Schema;
    const validate = ajv.compile(schema);
    const lab = parseJobText(readFileSync(new URL('../../examples/lab.yaml', import.meta.url), 'utf8')).manifest;
    expect(validate(lab)).toBe(true);
    const bad = structuredClone(lab) as { spec: { targets: { strategy: string }[]; shardSize: number } };
    bad.spec.targets[0]!.strategy = 'everything';
    bad.spec.shardSize = 1;
    expect(validate(bad)).toBe(false);
    expect(validate.errors!.map((e) => e.instancePath).sort()).toEqual(['/spec/shardSize', '/spec/targets/0/strategy']);
  });
});
