// The chart's monitoring, checked by the tools that will run it: promtool checks and unit-tests the alert
// rules, every dashboard query is parsed by promtool and its metric names are looked up in the code's own
// registries, helm renders the ServiceMonitor/PodMonitor/PrometheusRule/ConfigMap only where they belong,
// and a real Prometheus (Debian's) scrapes a `widescan run` in the lab: the dashboard's queries return
// data and an alert fires when its condition is provoked.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { jobTagOf } from '../../lib/core/keys.js';
import { createMetrics } from '../../lib/metrics.js';
import { parseOperatorConfig } from '../../operator/config.js';
import { poolDeployment } from '../../operator/pools.js';
import { netnsExecArgs, type LabInfo } from '../../testbed/lab.js';
import { eventually, startCli } from '../helpers/cli.js';
import { helmBinary } from '../helpers/layer.js';
import { INJECTOR_PREAMBLE, startLab, stopLab, writeJob } from '../helpers/lab.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const CHART = join(repo, 'charts/widescan');
const RULES = join(CHART, 'rules/widescan-rules.yaml');
const DASHBOARD = join(CHART, 'dashboards/widescan.json');
const work = mkdtempSync(join(tmpdir(), 'widescan-monitoring-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function need(tool: string): void {
  if (spawnSync(tool, ['--version']).error) {
    throw new Error(`${tool} not found: install Debian's prometheus package (apt-get install -y prometheus; scripts/setup.sh --tests does)`);
  }
}

/** promtool with its exit status and everything it printed. */
function promtool(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout + r.stderr };
}

let fileCount = 0;
function tempFile(name: string, text: string): string {
  const path = join(work, `${++fileCount}-${name}`);
  writeFileSync(path, text);
  return path;
}

// ---------------------------------------------------------------------------------------------------
// The alert rules

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rulesFile = () => YAML.parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> };
const allRules = () => rulesFile().groups.flatMap((g) => g.rules);

const ALERTS = ['WidescanJobStalled', 'WidescanInvalidRepliesHigh', 'WidescanSendErrors', 'WidescanNoReadyWorkers', 'WidescanQueueGrowing', 'WidescanBootstrapDown'];

/** The rule file with every `for:` replaced (and annotations dropped, which `promtool test rules` would compare). */
function rulesCopy(change: (r: Rule) => void): string {
  const file = rulesFile();
  for (const r of file.groups.flatMap((g) => g.rules)) change(r);
  return tempFile('rules.yaml', YAML.stringify(file));
}

interface Scenario {
  name: string;
  series: Record<string, string>;
  /** At each time, the alerts of one name expected firing: their labels besides alertname and severity. */
  expect: Array<{ at: string; alert: string; firing: Array<Record<string, string>> }>;
}

function severityOf(alert: string): string {
  const rule = allRules().find((r) => r.alert === alert);
  if (!rule) throw new Error(`no alert ${alert} in ${RULES}`);
  return rule.labels!.severity!;
}

/** `promtool test rules` over the real expressions and `for:` durations, annotations left out. */
function testRules(scenarios: Scenario[]): { status: number | null; out: string } {
  const rules = rulesCopy((r) => delete r.annotations);
  const tests = scenarios.map((s) => ({
    interval: '1m',
    input_series: Object.entries(s.series).map(([series, values]) => ({ series, values })),
    alert_rule_test: s.expect.map((e) => ({
      eval_time: e.at,
      alertname: e.alert,
      exp_alerts: e.firing.map((labels) => ({ exp_labels: { ...labels, severity: severityOf(e.alert) } })),
    })),
  }));
  return promtool('test', 'rules', tempFile('rules.test.yaml', YAML.stringify({ rule_files: [rules], evaluation_interval: '1m', tests })));
}

const SCENARIOS: Scenario[] = [
  {
    name: 'a job without progress and without probes stalls; slow, moving, finished and suspended jobs do not',
    series: {
      'widescan_job_progress_ratio{job="ns/stuck"}': '0.25x60',
      'widescan_job_progress_ratio{job="ns/slow"}': '0.5x60',
      'widescan_probes_sent_total{job="ns/slow",backend="cpu"}': '0+100x60',
      'widescan_job_progress_ratio{job="ns/moving"}': '0+0.01x60',
      'widescan_job_progress_ratio{job="ns/done"}': '1x60',
      'widescan_job_progress_ratio{job="ns/paused"}': '0.25x60',
      'widescan_job_phase{job="ns/paused",phase="Suspended"}': '1x60',
      'widescan_job_phase{job="ns/stuck",phase="Suspended"}': '0x60',
    },
    expect: [
      { at: '10m', alert: 'WidescanJobStalled', firing: [] },
      { at: '40m', alert: 'WidescanJobStalled', firing: [{ job: 'ns/stuck' }] },
    ],
  },
  {
    name: 'a third of the replies invalid alerts; 1% invalid or a trickle does not',
    series: {
      'widescan_replies_total{job="ns/forged",result="valid"}': '0+10x30',
      'widescan_replies_total{job="ns/forged",result="invalid"}': '0+5x30',
      'widescan_replies_total{job="ns/fine",result="valid"}': '0+100x30',
      'widescan_replies_total{job="ns/fine",result="invalid"}': '0+1x30',
      'widescan_replies_total{job="ns/trickle",result="invalid"}': '0+1x30',
    },
    expect: [
      { at: '3m', alert: 'WidescanInvalidRepliesHigh', firing: [] },
      { at: '20m', alert: 'WidescanInvalidRepliesHigh', firing: [{ job: 'ns/forged' }] },
    ],
  },
  {
    name: 'send errors above 1% alert, also when nothing is sent at all; 0.01% does not',
    series: {
      'widescan_probes_sent_total{job="ns/refused",backend="cpu"}': '0+1000x30',
      'widescan_send_errors_total{job="ns/refused",reason="ENOBUFS"}': '0+100x30',
      'widescan_send_errors_total{job="ns/blocked",reason="EPERM"}': '0+50x30',
      'widescan_probes_sent_total{job="ns/ok",backend="gpu"}': '0+10000x30',
      'widescan_send_errors_total{job="ns/ok",reason="ENOBUFS"}': '0+1x30',
    },
    expect: [
      { at: '5m', alert: 'WidescanSendErrors', firing: [] },
      { at: '20m', alert: 'WidescanSendErrors', firing: [{ job: 'ns/refused' }, { job: 'ns/blocked' }] },
    ],
  },
  {
    name: 'shards waiting and no worker target: no ready workers',
    series: { 'widescan_queue_depth{state="waiting"}': '5x30', 'up{component="bootstrap"}': '1x30' },
    expect: [
      { at: '5m', alert: 'WidescanNoReadyWorkers', firing: [] },
      { at: '20m', alert: 'WidescanNoReadyWorkers', firing: [{}] },
      { at: '20m', alert: 'WidescanQueueGrowing', firing: [] },
    ],
  },
  {
    name: 'shards waiting, workers up but sending nothing: no ready workers',
    series: {
      'widescan_queue_depth{state="waiting"}': '5x30',
      'up{component="worker",instance="w1"}': '1x30',
      'widescan_probes_sent_total{job="ns/a",backend="cpu"}': '100x30',
    },
    expect: [{ at: '20m', alert: 'WidescanNoReadyWorkers', firing: [{}] }],
  },
  {
    name: 'shards waiting while workers send: healthy',
    series: {
      'widescan_queue_depth{state="waiting"}': '5x30',
      'up{component="worker",instance="w1"}': '1x30',
      'widescan_probes_sent_total{job="ns/a",backend="cpu"}': '0+100x30',
    },
    expect: [{ at: '20m', alert: 'WidescanNoReadyWorkers', firing: [] }],
  },
  {
    name: 'a queue that keeps growing alerts after 30 minutes',
    series: {
      'widescan_queue_depth{state="waiting"}': '0+1x120',
      'up{component="worker",instance="w1"}': '1x120',
      'widescan_probes_sent_total{job="ns/a",backend="cpu"}': '0+100x120',
    },
    expect: [
      { at: '20m', alert: 'WidescanQueueGrowing', firing: [] },
      { at: '60m', alert: 'WidescanQueueGrowing', firing: [{}] },
    ],
  },
  {
    name: 'a bootstrap target that is down alerts with its instance',
    series: { 'up{component="bootstrap",instance="10.0.0.7:8080",job="ws/widescan-bootstrap"}': '0x20' },
    expect: [
      { at: '3m', alert: 'WidescanBootstrapDown', firing: [] },
      { at: '10m', alert: 'WidescanBootstrapDown', firing: [{ component: 'bootstrap', instance: '10.0.0.7:8080', job: 'ws/widescan-bootstrap' }] },
    ],
  },
  {
    name: 'no bootstrap target at all alerts; one that is up does not',
    series: { 'up{component="worker",instance="w1"}': '1x20' },
    expect: [{ at: '10m', alert: 'WidescanBootstrapDown', firing: [{ component: 'bootstrap' }] }],
  },
  {
    name: 'a bootstrap that is up: no alert',
    series: { 'up{component="bootstrap",instance="10.0.0.7:8080"}': '1x20' },
    expect: [{ at: '10m', alert: 'WidescanBootstrapDown', firing: [] }],
  },
];

describe('alert rules (rules/widescan-rules.yaml)', () => {
  beforeAll(() => need('promtool'));

  test('promtool check rules passes: the six alerts, their expressions and annotation templates', () => {
    const r = promtool('check', 'rules', RULES);
    expect(r.out).toContain('SUCCESS: 6 rules found');
    expect(r.status).toBe(0);
  });

  test('every alert has a for:, a severity and a summary and description', () => {
    const rules = allRules();
    expect(rules.map((r) => r.alert)).toEqual(ALERTS);
    for (const r of rules) {
      expect(r.for).toMatch(/^\d+[smh]$/);
      expect(['info', 'warning', 'critical']).toContain(r.labels?.severity);
      expect(r.annotations?.summary?.length).toBeGreaterThan(10);
      // A runbook hint: what to look at, not only what happened.
      expect(r.annotations?.description?.length).toBeGreaterThan(100);
    }
  });

  test.each(SCENARIOS.map((s) => [s.name, s] as const))('promtool test rules: %s', (_name, scenario) => {
    const r = testRules([scenario]);
    expect(r.out).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  test('the harness can fail: wrong expectations and a broken rule file are rejected', () => {
    const wrong = testRules([{ name: 'wrong', series: { 'up{component="bootstrap",instance="b"}': '1x20' }, expect: [{ at: '10m', alert: 'WidescanBootstrapDown', firing: [{ component: 'bootstrap', instance: 'b' }] }] }]);
    expect(wrong.status).not.toBe(0);
    expect(wrong.out).toContain('WidescanBootstrapDown');
    const broken = tempFile('broken.yaml', readFileSync(RULES, 'utf8').replace('widescan_job_progress_ratio < 1', 'widescan_job_progress_ratio < < 1'));
    const r = promtool('check', 'rules', broken);
    expect(r.status).not.toBe(0);
    expect(r.out).toContain('WidescanJobStalled');
  });
});

// ---------------------------------------------------------------------------------------------------
// The dashboard

interface Target {
  expr: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion: number;
  uid: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown; datasource?: { uid?: string }; allValue?: string }> };
}
const dashboard = () => JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
const allPanels = (d: Dashboard) => d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queries = (d: Dashboard) => allPanels(d).flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));

/** Grafana's variables as a Prometheus would see them, with a plausible value each. */
const VARIABLES: Record<string, string> = { job: '.*', __rate_interval: '1m', __interval: '30s', __range: '1h' };
function substitute(expr: string, vars: Record<string, string> = VARIABLES): string {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => {
    const name = (a ?? b)!;
    if (!(name in vars)) throw new Error(`dashboard query uses $${name}, which the dashboard does not define: ${expr}`);
    return vars[name]!;
  });
}

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan', 'atan2']);
/** The metric names a PromQL expression selects (strings, matchers, ranges, grouping lists and calls left out). */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w.:])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()/g)) if (!PROMQL_WORDS.has(m[0].toLowerCase())) names.add(m[0]);
  return [...names].sort();
}

/** Every series name the code exports: createMetrics' registry (with the default process/nodejs metrics) and `up`. */
async function exportedNames(): Promise<Set<string>> {
  const { registry } = createMetrics('x');
  const names = new Set(['up']);
  for (const m of await registry.getMetricsAsJSON()) {
    names.add(m.name);
    const type = String(m.type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(m.name + s);
  }
  registry.clear();
  return names;
}

/** Each expression as a recording rule: `promtool check rules` parses them all and names the bad ones. */
function checkExpressions(exprs: string[]): { status: number | null; out: string } {
  const rules = exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr }));
  return promtool('check', 'rules', tempFile('dashboard-rules.yaml', YAML.stringify({ groups: [{ name: 'dashboard', rules }] })));
}

describe('Grafana dashboard (dashboards/widescan.json)', () => {
  beforeAll(() => need('promtool'));

  test('metricNames finds the selected series and nothing else', () => {
    expect(metricNames('sum by (job, backend) (rate(widescan_probes_sent_total{job=~"$job", x="a{b}"}[5m] offset 1h))')).toEqual(['widescan_probes_sent_total']);
    expect(metricNames('histogram_quantile(0.95, sum by (le) (rate(a_bucket[1m]))) / on (x) group_left (y) b > bool 1e3')).toEqual(['a_bucket', 'b']);
    expect(metricNames('up{component="bootstrap"} == 0 or absent(up{component="bootstrap"})')).toEqual(['up']);
    expect(metricNames('deriv(sum(q{state="waiting"})[30m:1m]) > 0 unless on () vector(1)')).toEqual(['q']);
  });

  test('schema 39+, a ${datasource} variable used by every panel and query, a job variable from the operator\'s metric', () => {
    const d = dashboard();
    expect(d.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(d.uid).toBe('widescan');
    const vars = Object.fromEntries(d.templating.list.map((v) => [v.name, v]));
    expect(vars.datasource).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.job).toMatchObject({ type: 'query', datasource: { uid: '${datasource}' }, allValue: '.*' });
    expect(JSON.stringify(vars.job!.query)).toContain('label_values(widescan_job_progress_ratio, job)');
    const panels = allPanels(d);
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels.filter((p) => p.type !== 'row')) {
      expect([p.title, p.datasource?.uid]).toEqual([p.title, '${datasource}']);
      expect(p.targets?.length).toBeGreaterThan(0);
      for (const t of p.targets!) expect([p.title, t.datasource?.uid]).toEqual([p.title, '${datasource}']);
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    }
  });

  test('has the panels the issue asks for', () => {
    const titles = allPanels(dashboard()).map((p) => p.title);
    expect(new Set(titles).size).toBe(titles.length); // the end-to-end test finds queries by title
    for (const t of ['Probe rate by job and backend', 'Replies by result', 'Peers discovered', 'Progress', 'ETA', 'Shard states', 'Queue depth', 'Addresses generated by backend', 'Processes by I/O path', 'Reconciles by result', 'Reconcile duration p95', 'Bootstrap peers', 'HTTP requests by code']) {
      expect(titles).toContain(t);
    }
  });

  test('every query parses (promtool), and a broken one would be named', () => {
    const exprs = queries(dashboard()).map((q) => substitute(q.expr));
    expect(exprs.length).toBeGreaterThan(20);
    const ok = checkExpressions(exprs);
    expect(ok.out).toContain(`SUCCESS: ${exprs.length} rules found`);
    expect(ok.status).toBe(0);
    const bad = checkExpressions([...exprs, 'sum by (job (rate(widescan_probes_sent_total[1m]))']);
    expect(bad.status).not.toBe(0);
    expect(bad.out).toContain(`dashboard:query_${exprs.length}`);
    expect(() => substitute('rate(x[$__bogus])')).toThrow(/\$__bogus/);
  });

  test('every metric the dashboard and the alert rules name exists in the code\'s registries', async () => {
    const exported = await exportedNames();
    // The registry is the real one: the names the issue lists are in it.
    for (const n of ['widescan_probes_sent_total', 'widescan_reconcile_duration_seconds_bucket', 'process_cpu_seconds_total', 'nodejs_eventloop_lag_p99_seconds']) expect(exported).toContain(n);
    const d = dashboard();
    const used = new Map<string, string>();
    for (const q of queries(d)) for (const n of metricNames(substitute(q.expr))) used.set(n, `panel "${q.title}"`);
    for (const v of d.templating.list) for (const n of metricNames(JSON.stringify(v.query ?? '').replace(/^.*label_values\(([^,]+),.*$/, '$1'))) used.set(n, `variable ${v.name}`);
    for (const r of allRules()) for (const n of metricNames(r.expr)) used.set(n, `alert ${r.alert}`);
    expect(used.size).toBeGreaterThan(15);
    const unknown = [...used].filter(([n]) => !exported.has(n)).map(([n, where]) => `${n} (${where})`);
    expect(unknown).toEqual([]);
    // And a made-up name would be caught.
    expect(exported.has('widescan_probes_total')).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------------
// The chart's templates

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}
interface Selector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values: string[] }>;
}
interface PodTemplate {
  metadata?: { labels?: Record<string, string> };
  spec?: { containers: Array<{ ports?: Array<{ name?: string }> }> };
}

/** A label selector as Kubernetes evaluates it (the operators these monitors use). */
function selects(selector: Selector, labels: Record<string, string> = {}): boolean {
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpressions = (selector.matchExpressions ?? []).every((e) => {
    if (e.operator !== 'In') throw new Error(`selector operator ${e.operator}: teach selects() about it`);
    return labels[e.key] !== undefined && e.values.includes(labels[e.key]!);
  });
  return byLabels && byExpressions;
}
const portNames = (t: PodTemplate | undefined) => (t?.spec?.containers ?? []).flatMap((c) => (c.ports ?? []).map((p) => p.name));

describe('monitoring templates (helm template)', () => {
  let helm: string;
  beforeAll(async () => {
    helm = await helmBinary();
  });
  const MONITORING_KINDS = ['ServiceMonitor', 'PodMonitor', 'PrometheusRule'];
  function render(...args: string[]): Manifest[] {
    const out = execFileSync(helm, ['template', 'wsc', CHART, '--namespace', 'scanning', ...args], { encoding: 'utf8', env: { ...process.env, HOME: work } });
    return YAML.parseAllDocuments(out).map((d) => d.toJS() as Manifest).filter(Boolean);
  }
  const of = (ms: Manifest[], kind: string) => ms.filter((m) => m.kind === kind);
  const dashboards = (ms: Manifest[]) => of(ms, 'ConfigMap').filter((m) => m.data?.['widescan.json'] !== undefined);
  const ON = ['--api-versions', 'monitoring.coreos.com/v1', '--set', 'monitoring.serviceMonitor.enabled=true', '--set', 'monitoring.prometheusRule.enabled=true', '--set', 'monitoring.grafanaDashboard.enabled=true'];

  test('with the monitoring.coreos.com/v1 API: ServiceMonitors, PodMonitor and PrometheusRule as the rule file says', () => {
    const ms = render(...ON, '--set', 'monitoring.serviceMonitor.additionalLabels.release=kps', '--set', 'monitoring.prometheusRule.additionalLabels.release=kps', '--set', 'monitoring.serviceMonitor.interval=15s');
    const sms = of(ms, 'ServiceMonitor');
    expect(sms.map((m) => m.metadata.name.replace(/^.*-/, '')).sort()).toEqual(['bootstrap', 'operator']);
    for (const sm of sms) {
      const component = sm.metadata.name.endsWith('-bootstrap') ? 'bootstrap' : 'operator';
      expect(sm.metadata.labels).toMatchObject({ release: 'kps' });
      const spec = sm.spec as { selector: { matchLabels: Record<string, string> }; namespaceSelector: { matchNames: string[] }; endpoints: Array<Record<string, unknown>> };
      expect(spec.selector.matchLabels['app.kubernetes.io/component']).toBe(component);
      expect(spec.namespaceSelector.matchNames).toEqual([sm.metadata.namespace]);
      expect(spec.endpoints).toEqual([expect.objectContaining({ path: '/metrics', interval: '15s', honorLabels: true, relabelings: [{ action: 'replace', targetLabel: 'component', replacement: component }] })]);
    }
    const [pm, ...morePms] = of(ms, 'PodMonitor');
    expect(morePms).toEqual([]);
    expect(pm!.metadata.labels).toMatchObject({ release: 'kps' });
    expect(pm!.spec).toMatchObject({
      selector: {
        matchExpressions: [
          { key: 'app.kubernetes.io/name', operator: 'In', values: ['widescan'] },
          { key: 'app.kubernetes.io/component', operator: 'In', values: ['listener', 'worker'] },
        ],
      },
      podMetricsEndpoints: [{ port: 'metrics', path: '/metrics', interval: '15s', honorLabels: true }],
    });
    const [rule, ...moreRules] = of(ms, 'PrometheusRule');
    expect(moreRules).toEqual([]);
    expect(rule!.metadata.labels).toMatchObject({ release: 'kps' });
    expect(rule!.spec).toEqual(rulesFile());
  });

  test('the monitors select exactly the chart\'s and the operator\'s metrics endpoints, by the port names those declare', () => {
    const ms = render(...ON);
    const services = of(ms, 'Service');
    for (const sm of of(ms, 'ServiceMonitor')) {
      const spec = sm.spec as { selector: Selector; endpoints: Array<{ port: string }> };
      const selected = services.filter((svc) => svc.metadata.namespace === sm.metadata.namespace && selects(spec.selector, svc.metadata.labels));
      expect(selected.map((svc) => svc.metadata.name)).toEqual([sm.metadata.name]);
      expect((selected[0]!.spec as { ports: Array<{ name: string }> }).ports.map((p) => p.name)).toContain(spec.endpoints[0]!.port);
    }
    const pm = of(ms, 'PodMonitor')[0]!;
    const pmSpec = pm.spec as { selector: Selector; namespaceSelector: { matchNames: string[] }; podMetricsEndpoints: Array<{ port: string }> };
    const port = pmSpec.podMetricsEndpoints[0]!.port;
    // The chart's workloads: only the listener DaemonSet's pods are the PodMonitor's (the others have Services).
    const workloads = ms.filter((m) => ['Deployment', 'DaemonSet', 'StatefulSet'].includes(m.kind));
    const podsOf = (m: Manifest) => (m.spec as { template: PodTemplate }).template;
    expect(workloads.filter((w) => selects(pmSpec.selector, podsOf(w).metadata?.labels)).map((w) => w.kind)).toEqual(['DaemonSet']);
    expect(portNames(podsOf(of(ms, 'DaemonSet')[0]!))).toContain(port);
    // The worker pools, as the operator creates them from the chart's operator configuration.
    const configMap = of(ms, 'ConfigMap').find((m) => m.metadata.labels?.['app.kubernetes.io/component'] === 'operator')!;
    const [configFile, configText] = Object.entries(configMap.data!)[0]!;
    const config = parseOperatorConfig(configText, configFile);
    expect(pmSpec.namespaceSelector.matchNames).toContain(config.namespace);
    for (const pool of ['gpu', 'cpu'] as const) {
      const workers = poolDeployment(config, pool, 1).spec!.template as PodTemplate;
      expect(selects(pmSpec.selector, workers.metadata?.labels)).toBe(true);
      expect(portNames(workers)).toContain(port);
    }
  });

  test('the dashboard ConfigMap carries the sidecar label and the JSON byte for byte', () => {
    const ms = render(...ON, '--set', 'monitoring.grafanaDashboard.sidecarLabel=grafana_dashboard', '--set-string', 'monitoring.grafanaDashboard.sidecarLabelValue=1', '--set', 'monitoring.grafanaDashboard.namespace=grafana');
    const [cm, ...more] = dashboards(ms);
    expect(more).toEqual([]);
    expect(cm!.metadata.namespace).toBe('grafana');
    expect(cm!.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    expect(cm!.data!['widescan.json']).toBe(readFileSync(DASHBOARD, 'utf8').replace(/\n$/, ''));
  });

  test('without the monitoring.coreos.com/v1 API no prometheus-operator resource renders (the dashboard still does)', () => {
    const ms = render('--set', 'monitoring.serviceMonitor.enabled=true', '--set', 'monitoring.prometheusRule.enabled=true', '--set', 'monitoring.grafanaDashboard.enabled=true');
    expect(ms.filter((m) => MONITORING_KINDS.includes(m.kind))).toEqual([]);
    expect(dashboards(ms)).toHaveLength(1);
  });

  test('each part can be switched off on its own', () => {
    const noMonitors = render(...ON, '--set', 'monitoring.serviceMonitor.enabled=false');
    expect(noMonitors.filter((m) => m.kind === 'ServiceMonitor' || m.kind === 'PodMonitor')).toEqual([]);
    expect(of(noMonitors, 'PrometheusRule')).toHaveLength(1);
    const noRules = render(...ON, '--set', 'monitoring.prometheusRule.enabled=false');
    expect(of(noRules, 'PrometheusRule')).toEqual([]);
    expect(of(noRules, 'ServiceMonitor')).toHaveLength(2);
    const noDashboard = render(...ON, '--set', 'monitoring.grafanaDashboard.enabled=false');
    expect(dashboards(noDashboard)).toEqual([]);
    expect(of(noDashboard, 'PodMonitor')).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------------
// A real Prometheus scraping a real `widescan run`

/** Ports inside the lab's scanner namespace, which this test created: nothing else listens there. */
const PROMETHEUS_PORT = 9090;
const METRICS_PORT = 9400; // planner; listener +1; worker +2
const BOOTSTRAP_PORT = 9410;

/**
 * Relays a Unix socket (reachable from the host: it is a file) to Prometheus on the namespace's loopback
 * (which is not). Runs inside the namespace.
 */
const RELAY = `
const net = require('node:net');
const [sock, port] = process.argv.slice(1);
net.createServer((c) => {
  const up = net.connect(Number(port), '127.0.0.1');
  c.pipe(up).pipe(c);
  c.on('error', () => up.destroy());
  up.on('error', () => c.destroy());
}).listen(sock, () => console.log('relaying'));
`;

/** Sends forged echo replies for the job's tag from the responder namespace, 10 every 100 ms, until SIGTERM. */
const INJECTOR = INJECTOR_PREAMBLE + `// A MAC made with another key: the listener counts it invalid against the job its tag names.
const w = new probe.ProbeWriter({ networkId: keys.networkIdOf(secret), jobTag: tag, macKey: keys.macKeyFor(Buffer.from('not the network key'), tag) });
const packet = Buffer.alloc(w.packetBytes);
w.write(packet, 0, me, 0, 0, 5, Date.now());
packet[0] = 129;
const s = raw.createSocket({ addressFamily: raw.AddressFamily.IPv6, protocol: raw.Protocol.ICMPv6 });
let sent = 0;
let stop = false;
process.on('SIGTERM', () => (stop = true));
// At most 30 s, whatever happens to the test.
for (let i = 0; i < 3000 && !stop; i++) {
  await new Promise((res) => s.send(packet, 0, packet.length, 'fd00:5ca:1ab:f001::1', (err) => { if (!err) sent++; res(); }));
  if (i % 10 === 9) await new Promise((r) => setTimeout(r, 100));
}
s.close();
console.log(sent);
`;

interface PromResult {
  metric: Record<string, string>;
  values?: Array<[number, string]>;
  value?: [number, string];
}

describe('a real Prometheus scraping `widescan run` in the lab', () => {
  let lab: LabInfo | undefined;
  const children: ChildProcess[] = [];
  const socket = join(work, 'prometheus.sock');

  function startIn(ns: string, argv: string[], name: string): ChildProcess {
    const [cmd, ...args] = netnsExecArgs(ns, argv);
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout!.on('data', (d) => (log += d));
    child.stderr!.on('data', (d) => (log += d));
    child.on('exit', (code) => {
      if (code) process.stderr.write(`${name} exited with ${code}:\n${log.slice(-3000)}\n`);
    });
    children.push(child);
    return child;
  }

  function api<T>(path: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: socket, path, timeout: 5000 }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${body.slice(0, 500)}`));
          try {
            resolve((path.startsWith('/api/') ? (JSON.parse(body) as { data: T }).data : body) as T);
          } catch (err) {
            reject(err as Error);
          }
        });
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error(`GET ${path}: timed out`)));
      req.end();
    });
  }
  const instant = async (query: string) => (await api<{ result: PromResult[] }>(`/api/v1/query?query=${encodeURIComponent(query)}`)).result;
  const range = async (query: string, start: number, end: number) =>
    (await api<{ result: PromResult[] }>(`/api/v1/query_range?query=${encodeURIComponent(query)}&start=${start}&end=${end}&step=1`)).result;

  beforeAll(async () => {
    need('prometheus');
    lab = await startLab();
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    await stopLab(lab);
  });

  test('the dashboard\'s queries return data and the invalid-reply and bootstrap-down alerts fire', async () => {
    const ns = lab!.namespaces.scan;
    // The real rules with for: 0s, so that a few seconds of a condition suffice.
    const rules = rulesCopy((r) => (r.for = '0s'));
    const target = (port: number, component: string) => ({ targets: [`127.0.0.1:${port}`], labels: { component } });
    const config = tempFile('prometheus.yml', YAML.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [rules],
      scrape_configs: [{
        job_name: 'widescan',
        // As the chart's ServiceMonitors/PodMonitor do: the processes' own job label is the WidescanJob.
        honor_labels: true,
        static_configs: [target(METRICS_PORT, 'planner'), target(METRICS_PORT + 1, 'listener'), target(METRICS_PORT + 2, 'worker'), target(BOOTSTRAP_PORT, 'bootstrap')],
      }],
    }));
    startIn(ns, ['prometheus', `--config.file=${config}`, `--storage.tsdb.path=${join(work, 'tsdb')}`, `--web.listen-address=127.0.0.1:${PROMETHEUS_PORT}`, '--log.level=warn'], 'prometheus');
    startIn(ns, [process.execPath, '-e', RELAY, socket, String(PROMETHEUS_PORT)], 'relay');
    await eventually(() => api<string>('/-/ready').then(() => true, () => false), 20_000, 'Prometheus ready');
    // Prometheus hands discovered targets to its scrapers every 5 s: start the run once all four are scraped (down).
    await eventually(async () => (await instant('up')).length === 4, 20_000, 'Prometheus scraping the four targets');

    const uid = 'monitoring-test-uid';
    const job = writeJob(`apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: mon, uid: ${uid}}
spec:
  targets: [{prefix: "fd00:5ca:1ab:200::/118", strategy: full}]
  allowNonGlobal: true
  rate: {packetsPerSecond: 200}
  shardSize: 256
  probe: {replyTimeoutSeconds: 1}
`);
    const started = Date.now() / 1000;
    const run = startCli(['run', job, '--network-key-file', lab!.networkKeyFile, '--metrics-port', String(METRICS_PORT), '--bootstrap-port', String(BOOTSTRAP_PORT)], { ns, timeoutMs: 60_000 });
    // The planner serves its metrics once the job is registered; the listener knows its tag at its next
    // registry read (every 2 s), and until then counts replies against job "unknown".
    await eventually(async () => (await instant('widescan_job_progress_ratio{job="mon"}')).length === 1, 15_000, 'the job registered');
    const injectedFrom = Date.now() / 1000;
    const injector = startIn(lab!.namespaces.resp, [process.execPath, tempFile('inject.mjs', INJECTOR), lab!.networkKeyFile, String(jobTagOf(uid)), repo], 'injector');
    let injectorOut = '';
    injector.stdout!.on('data', (d) => (injectorOut += d));
    const r = await run.done;
    injector.kill('SIGTERM');
    await new Promise((res) => injector.once('close', res));
    expect(Number(injectorOut.trim())).toBeGreaterThan(100);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Succeeded: 1024 probes/);
    await new Promise((res) => setTimeout(res, 1500)); // the last scrapes
    const end = Date.now() / 1000;

    const panels = Object.fromEntries(queries(dashboard()).map((q) => [q.title, substitute(q.expr, { ...VARIABLES, __rate_interval: '10s' })]));
    const data = (title: string) => range(panels[title]!, started, end);
    const peak = (rs: PromResult[], match: Record<string, string> = {}) =>
      Math.max(0, ...rs.filter((s) => Object.entries(match).every(([k, v]) => s.metric[k] === v)).flatMap((s) => s.values!.map(([, v]) => Number(v))));

    expect(peak(await data('Probe rate by job and backend'), { job: 'mon' })).toBeGreaterThan(50);
    const replies = await data('Replies by result');
    expect(peak(replies, { job: 'mon', result: 'invalid' })).toBeGreaterThan(10);
    expect(replies.some((s) => s.metric.result === 'valid')).toBe(true);
    expect(peak(await data('Progress over time'), { job: 'mon' })).toBe(1);
    expect(peak(await data('ETA'), { job: 'mon' })).toBeGreaterThan(0);
    expect(peak(await data('Shard states'), { job: 'mon', state: 'completed' })).toBe(4);
    expect(await data('Queue depth')).not.toEqual([]);
    expect(peak(await data('Addresses generated by backend'))).toBeGreaterThan(50);
    expect(peak(await data('Peers discovered'), { job: 'mon' })).toBeGreaterThan(0);
    expect((await data('Processes by I/O path')).map((s) => s.metric.component).sort()).toEqual(['listener', 'worker']);
    expect(peak(await data('HTTP requests by code'), { code: '200' })).toBeGreaterThan(0);
    // The four hosts of …:200::/118 (…::1, ::80, ::ff, ::100) reach the bootstrap as the scan finds them.
    expect(peak(await data('Bootstrap peers'), { kind: 'host' })).toBeGreaterThanOrEqual(3);
    expect(peak(await data('Bootstrap peers'), { kind: 'host' })).toBeLessThanOrEqual(4);
    expect((await data('Targets up')).map((s) => s.metric.component).sort()).toEqual(['bootstrap', 'listener', 'planner', 'worker']);

    // The run has ended: its bootstrap is gone (up == 0), and the forged replies are in the 10-minute window.
    type Alert = { labels: Record<string, string>; annotations: Record<string, string>; state: string };
    const firing = async () => (await api<{ alerts: Alert[] }>('/api/v1/alerts')).alerts.filter((a) => a.state === 'firing');
    const forgedAlert = (a: Alert) => a.labels.alertname === 'WidescanInvalidRepliesHigh' && a.labels.job === 'mon';
    await eventually(async () => {
      const now = await firing();
      return now.some(forgedAlert) && now.some((a) => a.labels.alertname === 'WidescanBootstrapDown');
    }, 15_000, 'WidescanInvalidRepliesHigh and WidescanBootstrapDown firing');
    const alerts = await firing();
    // (Replies before the listener knew the tag may fire it for job "unknown" too.)
    const invalid = alerts.find(forgedAlert)!;
    expect(invalid.labels).toMatchObject({ job: 'mon', severity: 'warning' });
    expect(invalid.annotations.summary).toMatch(/^\d+(\.\d+)?% of the replies to mon fail verification$/);
    const down = alerts.find((a) => a.labels.alertname === 'WidescanBootstrapDown')!;
    expect(down.labels).toMatchObject({ component: 'bootstrap', instance: `127.0.0.1:${BOOTSTRAP_PORT}`, severity: 'critical' });
    expect(down.annotations.description).toContain(`at 127.0.0.1:${BOOTSTRAP_PORT}`);
    // Each fired because of what happened: the forged replies, after they began; the bootstrap, again
    // after it was up (it was down before the run too).
    await new Promise((res) => setTimeout(res, 2500)); // ALERTS samples for steps after the run's end
    const seen = Date.now() / 1000;
    const firingAt = async (match: string) => (await range(`ALERTS{alertstate="firing",${match}}`, started, seen)).flatMap((s) => s.values!.map(([t]) => t));
    expect(Math.min(...(await firingAt('alertname="WidescanInvalidRepliesHigh",job="mon"')))).toBeGreaterThanOrEqual(injectedFrom);
    const downAt = await firingAt('alertname="WidescanBootstrapDown"');
    expect(downAt.length).toBeGreaterThan(0);
    expect(downAt.length).toBeLessThan(Math.floor(seen - started)); // not while the run's bootstrap was up
    expect(Math.max(...downAt)).toBeGreaterThanOrEqual(end); // and again once it had gone
    // Nothing provoked these: the lab's kernel took every probe, and the job completed.
    const names = alerts.map((a) => a.labels.alertname);
    expect(names).not.toContain('WidescanSendErrors');
    expect(names).not.toContain('WidescanJobStalled');
  });
});
