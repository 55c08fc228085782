// The container image without Docker (no engine runs on the test machines): the Dockerfile linted by hand
// with hadolint's rules (no hadolint package for Debian), its requirements checked, the .dockerignore checked
// against what the Dockerfile copies, and every entrypoint it names started from a replica of the final
// stage's /app (assembled from the Dockerfile's own COPY lines: package.json, dist/, the native addon and the
// production dependencies only) under the security context the chart gives that component: operator and
// bootstrap as uid 10001 without any capability, worker and listener as uid 0 with only NET_RAW, each in a
// network namespace of its own (their raw sockets see no real interface). Needs root, a built tree
// (`npm run build`, `npm install` for the addon), redis-server, iproute2 and util-linux (setpriv, unshare,
// nsenter).
import { execFile as execFileCallback, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { parse as parseYaml } from 'yaml';
import { freePort, stopChild } from '../../lib/proc.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../lib/redis.js';
import { startApiServer, type ApiServer, type KObject } from '../apiserver/server.js';
import { eventually } from '../helpers/cli.js';

const execFile = promisify(execFileCallback);
const repo = process.cwd();
const readText = (file: string) => readFileSync(join(repo, file), 'utf8');
const pkg = JSON.parse(readText('package.json')) as {
  version: string;
  license: string;
  engines: { node: string };
  dependencies: Record<string, string>;
  allowScripts: Record<string, boolean>;
};
const lock = JSON.parse(readText('package-lock.json')) as { packages: Record<string, { dev?: boolean; hasInstallScript?: boolean; version?: string }> };

// ---------------------------------------------------------------------------------------------------------
// A Dockerfile parser: instructions with their line, continuation lines joined, and the comment lines that
// precede each (hadolint's `# hadolint ignore=` pragmas live there).

interface Instruction {
  line: number;
  keyword: string;
  args: string;
  comments: string[];
}
interface Stage {
  image: string;
  name?: string;
  instructions: Instruction[];
}
interface Dockerfile {
  globalArgs: Map<string, string | undefined>;
  stages: Stage[];
}

function parseDockerfile(text: string): Dockerfile {
  const instructions: Instruction[] = [];
  const lines = text.split('\n');
  let comments: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const first = lines[i]!.trim();
    if (first === '') continue;
    if (first.startsWith('#')) {
      comments.push(first.slice(1).trim());
      continue;
    }
    const line = i + 1;
    let body = first;
    while (body.endsWith('\\')) {
      body = body.slice(0, -1);
      // Docker skips comment and empty lines inside a continued instruction.
      do i++;
      while (i < lines.length && /^\s*(#|$)/.test(lines[i]!));
      if (i >= lines.length) break;
      body += ' ' + lines[i]!.trim();
    }
    const m = /^(\S+)\s*(.*)$/.exec(body)!;
    instructions.push({ line, keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), comments });
    comments = [];
  }
  const globalArgs = new Map<string, string | undefined>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const [ref = '', as, name] = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const image = ref.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a?: string, b?: string) => globalArgs.get((a ?? b)!) ?? whole);
      stages.push({ image, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [ins] });
    } else if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new Error(`line ${ins.line}: only ARG may precede the first FROM, not ${ins.keyword}`);
      const [key, ...value] = ins.args.split('=');
      globalArgs.set(key!, value.length ? value.join('=').replace(/^"(.*)"$/, '$1') : undefined);
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { globalArgs, stages };
}

const jsonForm = (ins: Instruction): string[] | undefined => (ins.args.startsWith('[') ? (JSON.parse(ins.args) as string[]) : undefined);
const of = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);
const finalStage = (df: Dockerfile) => df.stages.at(-1)!;
/** RUN's shell commands, split at &&, ||, ; and |. */
const commands = (run: Instruction) => run.args.split(/&&|\|\||;|\|/).map((c) => c.trim().split(/\s+/));
const aptInstalls = (run: Instruction) => commands(run).filter((w) => w[0] === 'apt-get' && w.includes('install'));
const aptPackages = (words: string[]) => words.slice(words.indexOf('install') + 1).filter((w) => !w.startsWith('-'));

interface Copy {
  from?: string;
  sources: string[];
  dest: string;
}
function parseCopy(ins: Instruction): Copy {
  const words = jsonForm(ins) ?? ins.args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const paths = words.filter((w) => !w.startsWith('--'));
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
  return { from, sources: paths.slice(0, -1), dest: paths.at(-1)! };
}

// ---------------------------------------------------------------------------------------------------------
// hadolint's rules, by hand: each returns its findings as "line N: …" (empty: passes).

type Rule = { code: string; what: string; check(df: Dockerfile): string[] };

/** A `# hadolint ignore=CODE` pragma counts only with a comment beside it that says why. */
function ignored(ins: Instruction, code: string): boolean | 'unjustified' {
  const pragma = ins.comments.some((c) => /^hadolint ignore=/.test(c) && c.slice('hadolint ignore='.length).split(',').includes(code));
  if (!pragma) return false;
  return ins.comments.some((c) => c !== '' && !c.startsWith('hadolint ')) || 'unjustified';
}
function finding(ins: Instruction, code: string, message: string): string[] {
  const ignore = ignored(ins, code);
  if (ignore === true) return [];
  return [`line ${ins.line}: ${message}${ignore === 'unjustified' ? ` (the ignore=${code} pragma gives no reason)` : ''}`];
}

const stageNames = (df: Dockerfile, before: Stage) => df.stages.slice(0, df.stages.indexOf(before)).map((s) => s.name);
function imageRefs(df: Dockerfile): { stage: Stage; ref: string; tag?: string; digest: boolean }[] {
  return df.stages
    .filter((s) => s.image !== 'scratch' && !stageNames(df, s).includes(s.image))
    .map((stage) => {
      const [nameTag, digest] = stage.image.split('@');
      const last = nameTag!.split('/').at(-1)!;
      return { stage, ref: stage.image, tag: last.includes(':') ? last.split(':')[1] : undefined, digest: digest !== undefined };
    });
}

const RULES: Rule[] = [
  {
    code: 'DL3006',
    what: 'base images have an explicit tag',
    check: (df) => imageRefs(df).flatMap((r) => (r.tag || r.digest) && !r.ref.includes('$') ? [] : finding(r.stage.instructions[0]!, 'DL3006', `${r.ref} has no tag`)),
  },
  {
    code: 'DL3007',
    what: 'no `latest` tag',
    check: (df) => imageRefs(df).flatMap((r) => (r.tag === 'latest' ? finding(r.stage.instructions[0]!, 'DL3007', `${r.ref} uses latest`) : [])),
  },
  {
    code: 'pinned-version',
    what: 'base images pinned to a full version (x.y.z) or a digest',
    check: (df) =>
      imageRefs(df).flatMap((r) => (r.digest || /^\d+\.\d+\.\d+(-|$)/.test(r.tag ?? '') ? [] : finding(r.stage.instructions[0]!, 'pinned-version', `${r.ref} is not pinned to a full version`))),
  },
  {
    code: 'DL3008',
    what: 'apt-get install pins versions (or says why not)',
    check: (df) =>
      df.stages.flatMap((s) =>
        of(s, 'RUN').flatMap((run) =>
          aptInstalls(run).flatMap((words) => {
            const unpinned = aptPackages(words).filter((p) => !p.includes('='));
            return unpinned.length ? finding(run, 'DL3008', `unpinned apt packages: ${unpinned.join(' ')}`) : [];
          }),
        ),
      ),
  },
  {
    code: 'DL3009',
    what: 'apt lists removed in the RUN that fetched them',
    check: (df) =>
      df.stages.flatMap((s) =>
        of(s, 'RUN')
          .filter((run) => /\bapt-get\s+(update|install)\b/.test(run.args) && !/\brm -rf \/var\/lib\/apt\/lists\/\*/.test(run.args))
          .flatMap((run) => finding(run, 'DL3009', 'apt-get without rm -rf /var/lib/apt/lists/*')),
      ),
  },
  {
    code: 'DL3015',
    what: 'apt-get install --no-install-recommends',
    check: (df) =>
      df.stages.flatMap((s) =>
        of(s, 'RUN').flatMap((run) => (aptInstalls(run).some((w) => !w.includes('--no-install-recommends')) ? finding(run, 'DL3015', 'apt-get install without --no-install-recommends') : [])),
      ),
  },
  {
    code: 'DL3002',
    what: 'the final stage ends with a non-root USER',
    check: (df) => {
      const last = of(finalStage(df), 'USER').at(-1);
      if (!last) return [`line ${finalStage(df).instructions[0]!.line}: the final stage sets no USER, so it runs as root`];
      return ['root', '0'].includes(last.args.split(':')[0]!) ? finding(last, 'DL3002', `the last USER is ${last.args}`) : [];
    },
  },
  {
    code: 'DL3025',
    what: 'ENTRYPOINT and CMD in JSON form',
    check: (df) =>
      df.stages.flatMap((s) => s.instructions.filter((i) => ['CMD', 'ENTRYPOINT'].includes(i.keyword) && !jsonForm(i)).flatMap((i) => finding(i, 'DL3025', `${i.keyword} is not in JSON form`))),
  },
  {
    code: 'DL4006',
    what: 'SHELL with -o pipefail before a RUN with a pipe',
    check: (df) =>
      df.stages.flatMap((s) => {
        let pipefail = false;
        return s.instructions.flatMap((i) => {
          if (i.keyword === 'SHELL') {
            const shell = jsonForm(i) ?? [];
            pipefail = shell.some((w, k) => w === '-o' && shell[k + 1] === 'pipefail');
          }
          return i.keyword === 'RUN' && !jsonForm(i) && /(?<!\|)\|(?!\|)/.test(i.args) && !pipefail ? finding(i, 'DL4006', 'a pipe without SHELL ["/bin/bash", "-o", "pipefail", "-c"]') : [];
        });
      }),
  },
  {
    code: 'DL3059',
    what: 'no consecutive RUN instructions',
    check: (df) =>
      df.stages.flatMap((s) => s.instructions.flatMap((i, k) => (i.keyword === 'RUN' && s.instructions[k - 1]?.keyword === 'RUN' ? finding(i, 'DL3059', 'consecutive RUN instructions; join them') : []))),
  },
  {
    code: 'DL3020',
    what: 'COPY, not ADD, for files and folders',
    check: (df) =>
      df.stages.flatMap((s) =>
        of(s, 'ADD')
          .filter((add) => parseCopy(add).sources.some((src) => !/^https?:\/\//.test(src) && !/\.(tar|tar\.\w+|tgz|txz)$/.test(src)))
          .flatMap((add) => finding(add, 'DL3020', 'ADD of local files; use COPY')),
      ),
  },
  {
    code: 'DL3003',
    what: 'WORKDIR, not cd',
    check: (df) => df.stages.flatMap((s) => of(s, 'RUN').flatMap((run) => (commands(run).some((w) => w[0] === 'cd') ? finding(run, 'DL3003', 'cd in RUN; use WORKDIR') : []))),
  },
  {
    code: 'multi-stage',
    what: 'a build stage; the final stage installs no compiler and runs no npm install',
    check: (df) => {
      const final = finalStage(df);
      const out = df.stages.length < 2 ? [`line ${final.instructions[0]!.line}: a single stage; build in a separate one`] : [];
      const toolchain = /^(gcc|g\+\+|cpp|clang|make|cmake|build-essential|python3?|node-gyp)(=.*)?$/;
      for (const run of of(final, 'RUN')) {
        const cmds = commands(run);
        const tools = [...new Set(cmds.flatMap((w) => (w[0] === 'apt-get' && w.includes('install') ? aptPackages(w) : [w[0]!])).filter((w) => toolchain.test(w)))];
        if (tools.length) out.push(`line ${run.line}: the final stage installs or runs ${tools.join(', ')}`);
        if (cmds.some((w) => w[0] === 'npm' && ['install', 'i', 'ci', 'rebuild'].includes(w[1]!))) out.push(`line ${run.line}: the final stage runs npm install; copy node_modules from the build stage`);
      }
      return out;
    },
  },
];
const rule = (code: string) => RULES.find((r) => r.code === code)!;

const DOCKERFILE = readText('Dockerfile');
const df = parseDockerfile(DOCKERFILE);
const build = df.stages[0]!;
const final = finalStage(df);

// Bad Dockerfiles: each must make its rule fail.
const GOOD_TAIL = 'USER 10001\nENTRYPOINT ["node"]\n';
const BAD: [code: string, why: string, text: string][] = [
  ['DL3006', 'no tag', `FROM node\n${GOOD_TAIL}`],
  ['DL3006', 'an ARG without a default', `ARG BASE\nFROM \${BASE}\n${GOOD_TAIL}`],
  ['DL3007', 'latest', `FROM node:latest\n${GOOD_TAIL}`],
  ['pinned-version', 'a major version only', `FROM node:22-trixie-slim\n${GOOD_TAIL}`],
  ['DL3008', 'unpinned packages', `FROM debian:13.1\nRUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\n${GOOD_TAIL}`],
  ['DL3008', 'an ignore pragma without a reason', `FROM debian:13.1\n# hadolint ignore=DL3008\nRUN apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\n${GOOD_TAIL}`],
  ['DL3009', 'apt lists kept', `FROM debian:13.1\nRUN apt-get update && apt-get install -y --no-install-recommends curl=8.14.1-2\n${GOOD_TAIL}`],
  ['DL3009', 'lists removed in a later RUN', `FROM debian:13.1\nRUN apt-get update\nWORKDIR /\nRUN rm -rf /var/lib/apt/lists/*\n${GOOD_TAIL}`],
  ['DL3015', 'recommends installed', `FROM debian:13.1\nRUN apt-get update && apt-get install -y curl=8.14.1-2 && rm -rf /var/lib/apt/lists/*\n${GOOD_TAIL}`],
  ['DL3002', 'USER root last', `FROM debian:13.1\nUSER 10001\nUSER root\nENTRYPOINT ["x"]\n`],
  ['DL3002', 'USER 0:0', `FROM debian:13.1\nUSER 0:0\nENTRYPOINT ["x"]\n`],
  ['DL3002', 'no USER', `FROM debian:13.1\nENTRYPOINT ["x"]\n`],
  ['DL3025', 'shell-form CMD', `FROM debian:13.1\nUSER 1\nCMD node x.js\n`],
  ['DL3025', 'shell-form ENTRYPOINT', `FROM debian:13.1\nUSER 1\nENTRYPOINT node x.js\n`],
  ['DL4006', 'a pipe without pipefail', `FROM debian:13.1\nRUN curl -fsS https://example.invalid/x | sh\n${GOOD_TAIL}`],
  ['DL4006', 'pipefail set in another stage only', `FROM debian:13.1 AS a\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\nFROM debian:13.1\nRUN a | b\n${GOOD_TAIL}`],
  ['DL3059', 'two RUNs in a row', `FROM debian:13.1\nRUN a\n# a comment between does not separate them\nRUN b\n${GOOD_TAIL}`],
  ['DL3020', 'ADD of a folder', `FROM debian:13.1\nADD src/ /app/\n${GOOD_TAIL}`],
  ['DL3003', 'cd in RUN', `FROM debian:13.1\nRUN make -C x && cd /app && ls\n${GOOD_TAIL}`],
  ['multi-stage', 'a single stage', `FROM node:22.23.3-trixie-slim\n${GOOD_TAIL}`],
  ['multi-stage', 'a compiler in the final stage', `FROM debian:13.1 AS build\nFROM debian:13.1\nRUN apt-get install -y --no-install-recommends g++=4:14.2.0-1\n${GOOD_TAIL}`],
  ['multi-stage', 'npm install in the final stage', `FROM debian:13.1 AS build\nFROM debian:13.1\nRUN npm ci --omit=dev\n${GOOD_TAIL}`],
];
// And look-alikes that must pass, so the rules do not just fire on everything.
const GOOD: [code: string, why: string, text: string][] = [
  ['DL3006', 'a digest', `FROM node@sha256:${'a'.repeat(64)}\n${GOOD_TAIL}`],
  ['DL3006', 'an earlier stage', `FROM node:22.23.3 AS build\nFROM build\n${GOOD_TAIL}`],
  ['DL3008', 'pinned packages', `FROM debian:13.1\nRUN apt-get install -y --no-install-recommends curl=8.14.1-2\n${GOOD_TAIL}`],
  ['DL3008', 'a justified ignore', `FROM debian:13.1\n# Build tools, this stage only.\n# hadolint ignore=DL3008\nRUN apt-get install -y --no-install-recommends make\n${GOOD_TAIL}`],
  ['DL4006', 'a pipe after SHELL pipefail', `FROM debian:13.1\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\nRUN a | b\n${GOOD_TAIL}`],
  ['DL4006', '|| is no pipe', `FROM debian:13.1\nRUN a || b\n${GOOD_TAIL}`],
  ['DL3059', 'RUNs separated by COPY', `FROM debian:13.1\nRUN a\nCOPY x /x\nRUN b\n${GOOD_TAIL}`],
  ['DL3020', 'ADD of a URL', `FROM debian:13.1\nADD https://example.invalid/x.tgz /x\n${GOOD_TAIL}`],
  ['DL3003', '--cd is no cd', `FROM debian:13.1\nRUN tool --cd /x\n${GOOD_TAIL}`],
];

describe('Dockerfile lint (hadolint rules by hand: Debian has no hadolint package)', () => {
  test.each(RULES.map((r) => [r.code, r.what, r] as const))('%s (%s): the Dockerfile passes', (_code, _what, r) => {
    expect(r.check(df)).toEqual([]);
  });

  test.each(BAD)('%s fails on %s', (code, _why, text) => {
    expect(rule(code).check(parseDockerfile(text)).length).toBeGreaterThan(0);
  });

  test.each(GOOD)('%s passes %s', (code, _why, text) => {
    expect(rule(code).check(parseDockerfile(text))).toEqual([]);
  });

  test('the parser joins continuation lines, skips comments inside them, and keeps the comments before an instruction', () => {
    const parsed = parseDockerfile('# syntax=docker/dockerfile:1\nARG B=x:1.2.3\nFROM ${B} AS b\n# why\nRUN a \\\n  # inside\n  && b\nUSER 1\n');
    expect(parsed.globalArgs.get('B')).toBe('x:1.2.3');
    expect(parsed.stages[0]).toMatchObject({ image: 'x:1.2.3', name: 'b' });
    expect(parsed.stages[0]!.instructions[1]).toEqual({ line: 5, keyword: 'RUN', args: 'a  && b', comments: ['why'] });
    expect(() => parseDockerfile('RUN x\nFROM y:1')).toThrow(/only ARG may precede/);
  });
});

// ---------------------------------------------------------------------------------------------------------

const runArgs = (stage: Stage) => of(stage, 'RUN').map((r) => r.args).join(' && ');

describe('Dockerfile requirements', () => {
  test('the base: a pinned Node LTS slim image, one BASE for both stages; its Node can build the locked raw-socket', () => {
    const base = df.globalArgs.get('BASE')!;
    const m = /^node:(\d+)\.\d+\.\d+-(\w+)-slim$/.exec(base);
    expect(m).not.toBeNull();
    const major = Number(m![1]);
    expect(major % 2).toBe(0); // even majors are the LTS lines
    expect(major).toBeGreaterThanOrEqual(Number(/\d+/.exec(pkg.engines.node)![0]));
    // raw-socket pins nan 2.19.*, which builds against Node 22 but not 24 or 26 (tried; nan 2.30 builds on all three).
    const [nanMajor, nanMinor] = lock.packages['node_modules/nan']!.version!.split('.').map(Number);
    if (nanMajor === 2 && nanMinor! < 30) expect(major).toBeLessThanOrEqual(22);
    expect(df.stages.map((s) => of(s, 'FROM')[0]!.args.split(/\s+/)[0])).toEqual(['${BASE}', '${BASE}']);
    expect(build.name).toBe('build');
  });

  test('the build stage: toolchain, allowScripts kept, native addon required, TypeScript built, dev dependencies pruned', () => {
    const installed = of(build, 'RUN').flatMap(aptInstalls).flatMap(aptPackages);
    expect(installed).toEqual(expect.arrayContaining(['g++', 'make', 'python3']));
    const run = runArgs(build).replace(/\s+/g, ' ');
    expect(run).toMatch(/npm install [^&]*--ignore-scripts/);
    // Exactly the dependency install scripts package.json approves run, none other.
    const rebuilt = /npm rebuild ([^&]+)/.exec(run)![1]!.trim().split(/\s+/).sort();
    expect(rebuilt).toEqual(Object.keys(pkg.allowScripts).filter((k) => pkg.allowScripts[k]).sort());
    // A production dependency with an install script must be decided on in allowScripts.
    const scripted = Object.entries(lock.packages)
      .filter(([path, p]) => path.startsWith('node_modules/') && !p.dev && p.hasInstallScript)
      .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
    expect(scripted.filter((name) => !(name in pkg.allowScripts))).toEqual([]);
    expect(run).toMatch(/npm run install && test -f native\/build\/Release\/icmp6\.node/);
    expect(run).toMatch(/npm run build/);
    expect(run).toMatch(/npm prune --omit=dev/);
    expect(run.indexOf('npm run build')).toBeLessThan(run.indexOf('npm prune'));
    expect(of(build, 'ENV').map((e) => e.args)).toContain('npm_config_nodedir=/usr/local');
  });

  test('the build stage copies every source the build reads: tsconfig.build.json includes, tsconfigs, the lock, the addon sources', () => {
    const copied = of(build, 'COPY').flatMap((c) => parseCopy(c).sources.map((s) => posix.normalize(s).replace(/\/$/, '')));
    const tsBuild = JSON.parse(readText('tsconfig.build.json')) as { extends: string; include: string[] };
    const gyp = JSON.parse(readText('native/binding.gyp')) as { targets: { sources: string[] }[] };
    const needed = [
      'package.json',
      'package-lock.json',
      'tsconfig.build.json',
      tsBuild.extends.replace(/^\.\//, ''),
      ...tsBuild.include,
      ...gyp.targets.flatMap((t) => t.sources.map((s) => `native/${s}`)),
    ];
    const covered = (p: string) => copied.some((c) => p === c || p.startsWith(`${c}/`));
    expect(needed.filter((p) => !covered(p))).toEqual([]);
    // The panel's static files, which `npm run build` copies into dist/, come with bootstrap/.
    expect(covered('bootstrap/panel/index.html')).toBe(true);
    // Every copied path exists in the repository.
    expect(copied.filter((c) => !existsSync(join(repo, c)))).toEqual([]);
  });

  test('the final stage: production settings, OCI labels, uid 10001, one entrypoint with the CLI as the default', () => {
    expect(of(final, 'ENV').map((e) => e.args)).toContain('NODE_ENV=production');
    expect(of(final, 'HEALTHCHECK').map((h) => h.args)).toEqual(['NONE']);
    const labels = Object.fromEntries(
      of(final, 'LABEL')
        .flatMap((l) => [...l.args.matchAll(/([\w.-]+)="([^"]*)"/g)])
        .map((m) => [m[1]!, m[2]!]),
    );
    expect(Object.keys(labels).filter((k) => !k.startsWith('org.opencontainers.image.'))).toEqual([]);
    expect(labels).toMatchObject({ 'org.opencontainers.image.title': 'widescan', 'org.opencontainers.image.licenses': pkg.license, 'org.opencontainers.image.version': '${VERSION}' });
    expect(of(final, 'ARG').map((a) => a.args)).toContain(`VERSION=${pkg.version}`);
    expect(of(final, 'USER').at(-1)!.args).toBe('10001:10001');
    expect(runArgs(final)).toMatch(/--gid 10001 widescan\b.*useradd .*--uid 10001 --gid 10001/);
    expect(jsonForm(of(final, 'ENTRYPOINT')[0]!)).toEqual(['node', '/app/dist/cli/entrypoint.js']);
    expect(jsonForm(of(final, 'CMD')[0]!)).toEqual(['widescan', '--help']);
    expect(of(final, 'WORKDIR').map((w) => w.args)).toEqual(['/app']);
    // Everything the final stage has of widescan comes from the build stage.
    expect(of(final, 'COPY').map((c) => parseCopy(c).from)).toEqual(of(final, 'COPY').map(() => 'build'));
  });
});

// ---------------------------------------------------------------------------------------------------------
// .dockerignore, with Docker's semantics (moby/patternmatcher): Go filepath.Match patterns plus `**`, `!`
// re-includes, the last matching line wins, and a pattern that matches a folder matches everything in it.

function patternRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      i++;
      if (pattern[i + 1] === '/') {
        i++;
        re += '(?:.*/)?';
      } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) throw new Error(`.dockerignore pattern ${JSON.stringify(pattern)} has an unclosed [`);
      re += `[${pattern.slice(i + 1, end).replace(/^!/, '^')}]`;
      i = end;
    } else if (c === '\\') re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    else re += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const p = posix.normalize((negate ? l.slice(1) : l).trim().replace(/^\/+/, '')).replace(/\/+$/, '');
      return { negate, re: patternRegex(p) };
    });
  return (path) => {
    const parts = path.split('/');
    const prefixes = parts.map((_, k) => parts.slice(0, k + 1).join('/'));
    let excluded = false;
    for (const r of rules) if (prefixes.some((p) => r.re.test(p))) excluded = !r.negate;
    return excluded;
  };
}

/** The repository's files a build context would hold: tracked, and untracked but not ignored by git. */
const contextFiles = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: repo, encoding: 'utf8' })
  .split('\0')
  .filter((f) => f !== '' && existsSync(join(repo, f)));
const contextSources = df.stages.flatMap((s) => of(s, 'COPY').map(parseCopy).filter((c) => !c.from)).flatMap((c) => c.sources.map((s) => posix.normalize(s).replace(/\/$/, '')));
const underSources = (f: string) => contextSources.some((s) => f === s || f.startsWith(`${s}/`));

/** What is wrong with a .dockerignore: files the Dockerfile copies that it excludes, files it lets through that nothing copies. */
function dockerignoreProblems(text: string): { excludedButCopied: string[]; sentButUnused: string[] } {
  const excluded = dockerignore(text);
  return {
    excludedButCopied: contextFiles.filter((f) => underSources(f) && excluded(f)),
    sentButUnused: contextFiles.filter((f) => !underSources(f) && !excluded(f)),
  };
}

describe('.dockerignore', () => {
  const ignoreText = readText('.dockerignore');
  const excluded = dockerignore(ignoreText);

  test('excludes node_modules, .git, build outputs, test artifacts, the lab state and bench results', () => {
    const outside = [
      'node_modules/jest/package.json',
      '.git/HEAD',
      'dist/cli/entrypoint.js',
      'native/build/Release/icmp6.node',
      '.testbed/state.json',
      'test-artifacts/run.log',
      'coverage/lcov.info',
      'peers.ndjson',
      'test/integration/image.test.ts',
      'bench/reconcile.sh',
      'lib/node_modules/x/index.js',
    ];
    expect(outside.filter((p) => !excluded(p))).toEqual([]);
  });

  test('lets through every file the Dockerfile copies, and nothing else', () => {
    expect(contextSources.length).toBeGreaterThan(5);
    for (const s of contextSources) expect(contextFiles.some((f) => f === s || f.startsWith(`${s}/`))).toBe(true);
    expect(dockerignoreProblems(ignoreText)).toEqual({ excludedButCopied: [], sentButUnused: [] });
  });

  test('the check fails on a .dockerignore that drops copied sources or lets everything through', () => {
    expect(dockerignoreProblems(`${ignoreText}\nlib/core\n`).excludedButCopied).toContain('lib/core/ipv6.ts');
    expect(dockerignoreProblems(`${ignoreText}\n**/*.c\n`).excludedButCopied).toEqual(['native/icmp6.c']);
    expect(dockerignoreProblems('node_modules\n.git\n').sentButUnused).toContain('README.md');
    expect(dockerignore('node_modules\n.git\n')('node_modules/a/b.js')).toBe(true);
    expect(dockerignore('*\n!lib\nlib/**/*.md\n')('lib/x/y.md')).toBe(true);
    expect(dockerignore('*\n!lib\nlib/**/*.md\n')('lib/x/y.ts')).toBe(false);
    expect(dockerignore('/dist/\n')('dist/a.js')).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------
// What dist needs at run time.

/** dist's modules reachable from the entrypoint (static imports, dynamic imports, forked scripts) and the packages they import. */
function runtimeImports(entry: string): { files: Set<string>; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>(); // package → first importing file
  const queue = [entry];
  while (queue.length) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const text = readFileSync(file, 'utf8');
    // Relative module paths in any string literal: imports, the entrypoint's component table, fork() targets.
    for (const m of text.matchAll(/['"](\.\.?\/[^'"\s]+\.js)['"]/g)) {
      const target = resolve(dirname(file), m[1]!);
      if (existsSync(target)) queue.push(target);
    }
    for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bcreateRequire\([^)]*\)\s*\(\s*)['"]([^'"./][^'"]*)['"]/g)) {
      const spec = m[1]!;
      if (spec.startsWith('node:') || builtinModules.includes(spec.split('/')[0]!)) continue;
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
      if (!packages.has(name)) packages.set(name, file.slice(repo.length + 1));
    }
  }
  return { files, packages };
}

/** The production dependency tree `npm prune --omit=dev` leaves: the lock's packages not marked dev. */
const productionPackages = Object.entries(lock.packages)
  .filter(([path, p]) => path.startsWith('node_modules/') && !p.dev && path.split('node_modules/').length === 2)
  .map(([path]) => path);

describe('runtime files', () => {
  test('every package that dist imports on a path from the entrypoint is a production dependency', () => {
    const { files, packages } = runtimeImports(join(repo, 'dist/cli/entrypoint.js'));
    for (const main of ['operator', 'worker', 'listener', 'bootstrap', 'cli'].map((c) => `dist/${c}/main.js`)) expect(files).toContain(join(repo, main));
    const missing = [...packages].filter(([name]) => !(name in pkg.dependencies)).map(([name, file]) => `${file} imports ${name}, which npm prune --omit=dev removes: move it to dependencies`);
    expect(missing).toEqual([]);
  });

  test('the import scan finds bare and createRequire imports', () => {
    expect(runtimeImports(join(repo, 'dist/lib/icmp6socket.js')).packages.has('raw-socket')).toBe(true);
    expect(runtimeImports(join(repo, 'dist/lib/redis.js')).packages.has('ioredis')).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The final stage's /app, assembled from the Dockerfile's COPY --from=build lines. The build stage's WORKDIR
// is /app and its COPYs keep the repository's layout (checked above), so /app/<x> there is <x> here, except
// node_modules, which the build stage prunes to the production tree.

function copyTree(src: string, dest: string): void {
  mkdirSync(dirname(dest), { recursive: true });
  // Hard links: fast, and unlike symlinks they keep module resolution inside the replica.
  try {
    execFileSync('cp', ['-al', src, dest]);
  } catch {
    execFileSync('cp', ['-a', src, dest]);
  }
}

function assembleFinalStage(root: string): string {
  const buildDir = of(build, 'WORKDIR').at(-1)!.args;
  const finalDir = of(final, 'WORKDIR').at(-1)!.args;
  const app = join(root, finalDir);
  const modules = join(root, 'build-node_modules');
  for (const p of productionPackages) if (existsSync(join(repo, p))) copyTree(join(repo, p), join(modules, posix.relative('node_modules', p)));
  for (const ins of of(final, 'COPY')) {
    const { sources, dest } = parseCopy(ins);
    for (const src of sources) {
      const rel = posix.relative(buildDir, src.replace(/\/$/, ''));
      if (rel.startsWith('..')) throw new Error(`line ${ins.line}: ${src} is outside the build stage's ${buildDir}`);
      const from = rel === 'node_modules' ? modules : join(repo, rel);
      if (!existsSync(from)) throw new Error(`line ${ins.line}: ${src} does not exist here (${from}); run npm install and npm run build`);
      const target = join(app, dest);
      if (statSync(from).isDirectory()) {
        mkdirSync(target, { recursive: true });
        for (const entry of readdirSync(from)) copyTree(join(from, entry), join(target, entry));
      } else {
        copyTree(from, dest.endsWith('/') ? join(target, basename(from)) : target);
      }
    }
  }
  return app;
}

const ENTRY = jsonForm(of(final, 'ENTRYPOINT')[0]!)!;
const CMD = jsonForm(of(final, 'CMD')[0]!)!;
const IMAGE_ENV = Object.fromEntries(of(final, 'ENV').map((e) => e.args.split('=') as [string, string]));

/** Security contexts, by setpriv: the chart's, and two that must not give raw sockets. */
const SANDBOXES = {
  // operator, bootstrap: runAsUser 10001, capabilities drop ALL, allowPrivilegeEscalation false
  restricted: { netns: false, setpriv: ['--reuid=10001', '--regid=10001', '--clear-groups', '--no-new-privs', '--inh-caps=-all', '--bounding-set=-all'] },
  // worker, listener: runAsUser 0, capabilities drop ALL add NET_RAW, allowPrivilegeEscalation false
  netRaw: { netns: true, setpriv: ['--no-new-privs', '--inh-caps=-all', '--bounding-set=-all,+net_raw'] },
  rootNoCapabilities: { netns: true, setpriv: ['--no-new-privs', '--inh-caps=-all', '--bounding-set=-all'] },
  nonRootNetRaw: { netns: true, setpriv: ['--reuid=10001', '--regid=10001', '--clear-groups', '--no-new-privs', '--inh-caps=-all', '--bounding-set=-all,+net_raw'] },
} as const;

interface Running {
  child: ChildProcess;
  output(): string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let root: string;
let app: string;
let redis: EmbeddedRedis;
let socketRedis: EmbeddedRedis;
let apiServer: ApiServer;
const running: Running[] = [];

/** `ENTRYPOINT + args` as the image runs it: node is this one, /app is the replica. */
function start(args: string[], env: Record<string, string>, sandbox: keyof typeof SANDBOXES): Running {
  const [node, script] = ENTRY;
  expect(node).toBe('node');
  const finalDir = of(final, 'WORKDIR').at(-1)!.args;
  const argv = [process.execPath, join(app, posix.relative(finalDir, script!)), ...args];
  const s = SANDBOXES[sandbox];
  const priv = ['setpriv', ...s.setpriv, '--', ...argv];
  // Its own network namespace: raw sockets that see nothing but a loopback.
  const cmd = s.netns ? ['unshare', '--net', '--', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', ...priv] : priv;
  const child = spawn(cmd[0]!, cmd.slice(1), {
    cwd: app,
    env: { PATH: process.env.PATH!, HOME: '/nonexistent', ...IMAGE_ENV, WIDESCAN_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      res({ code, signal });
    }),
  );
  const r = { child, output: () => out, exit };
  running.push(r);
  return r;
}

const logged = (r: Running, msg: string) =>
  r
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as KObject)
    .find((l) => l.msg === msg);
async function waitLogged(r: Running, msg: string): Promise<KObject> {
  await eventually(() => logged(r, msg) !== undefined || r.child.exitCode !== null, 15_000, `log line ${JSON.stringify(msg)}`);
  const line = logged(r, msg);
  if (!line) throw new Error(`exited (${r.child.exitCode}) without logging ${JSON.stringify(msg)}:\n${r.output()}`);
  return line;
}

/** GET in the network namespace of `pid` (or here): the status code, 0 when nothing answers. */
async function httpStatus(url: string, pid?: number): Promise<number> {
  if (pid === undefined) {
    return fetch(url).then(
      async (r) => (await r.arrayBuffer(), r.status),
      () => 0,
    );
  }
  const script = `fetch(${JSON.stringify(url)}).then((r) => console.log(r.status), () => console.log(0))`;
  const { stdout } = await execFile('nsenter', [`--net=/proc/${pid}/ns/net`, '--', process.execPath, '-e', script]);
  return Number(stdout.trim());
}

function procStatus(pid: number): { uid: number; capEff: bigint; noNewPrivs: number; netns: string } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:\\s*(\\S+)`, 'm').exec(status)![1]!;
  return { uid: Number(field('Uid')), capEff: BigInt(`0x${field('CapEff')}`), noNewPrivs: Number(field('NoNewPrivs')), netns: execFileSync('readlink', [`/proc/${pid}/ns/net`], { encoding: 'utf8' }).trim() };
}
const CAP_NET_RAW = 1n << 13n;
const ownNetns = () => execFileSync('readlink', ['/proc/self/ns/net'], { encoding: 'utf8' }).trim();

async function stopCleanly(r: Running): Promise<void> {
  r.child.kill('SIGTERM');
  const { code, signal } = await r.exit;
  if (code !== 0) throw new Error(`exited with ${code ?? signal} on SIGTERM:\n${r.output()}`);
  expect({ code, signal }).toEqual({ code: 0, signal: null });
}

async function api(method: string, path: string, body?: unknown): Promise<{ code: number; body: KObject }> {
  const r = await fetch(apiServer.url + path, { method, headers: { authorization: `Bearer ${apiServer.token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { code: r.status, body: text ? (JSON.parse(text) as KObject) : {} };
}

/** A file uid 10001 can read. */
function publicFile(name: string, content: string): string {
  const file = join(root, 'etc', name);
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  writeFileSync(file, content, { mode: 0o644 });
  return file;
}

describe('every entrypoint, started from a replica of the final stage', () => {
  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/integration/image.test.ts needs root (setpriv, unshare --net, raw sockets); run the tests as root');
    root = mkdtempSync(join(tmpdir(), 'widescan-image-'));
    chmodSync(root, 0o755); // uid 10001 reads /app, as in the image
    app = assembleFinalStage(root);
    [redis, socketRedis, apiServer] = await Promise.all([startEmbeddedRedis(), startEmbeddedRedis({ unixSocket: true }) /* reachable from the private network namespaces too */, startApiServer()]);
    const crd = parseYaml(readText('crds/widescanjobs.widescan.dev.yaml')) as KObject;
    expect((await api('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd)).code).toBe(201);
    expect((await api('POST', '/api/v1/namespaces', { metadata: { name: 'widescan' } })).code).toBe(201);
  }, 30_000);

  afterAll(async () => {
    await Promise.all(running.map((r) => stopChild(r.child, 3000)));
    await Promise.all([redis?.stop(), socketRedis?.stop(), apiServer?.close()]);
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('the replica holds what the code looks for at run time, and no dev dependency', () => {
    for (const f of ['package.json', 'dist/cli/entrypoint.js', 'dist/bootstrap/panel/index.html', 'native/build/Release/icmp6.node', 'node_modules/raw-socket/build/Release/raw.node', 'node_modules/ioredis/package.json']) {
      expect(existsSync(join(app, f))).toBe(true);
    }
    expect(existsSync(join(app, 'node_modules/jest'))).toBe(false);
    expect(existsSync(join(app, 'node_modules/typescript'))).toBe(false);
    expect(existsSync(join(app, 'lib'))).toBe(false); // sources stay in the build stage
  });

  test('the default command is `widescan --help`; `widescan --version` reads /app/package.json', async () => {
    const help = start(CMD, {}, 'restricted');
    expect(await help.exit).toEqual({ code: 0, signal: null });
    expect(help.output()).toMatch(/^Usage: widescan /m);
    const version = start(['widescan', '--version'], {}, 'restricted');
    expect(await version.exit).toEqual({ code: 0, signal: null });
    expect(version.output().trim()).toBe(pkg.version);
  });

  test('an unknown or missing component exits 2 with the usage line, which names the components tested here', async () => {
    for (const args of [['nope'], []]) {
      const r = start(args, {}, 'restricted');
      expect((await r.exit).code).toBe(2);
      expect(r.output()).toMatch(/^usage: entrypoint <operator\|worker\|listener\|bootstrap\|widescan> \[args…\]; got "(nope)?"\n$/);
    }
  });

  test('bootstrap: uid 10001, no capability; serves /readyz and the panel; SIGTERM → exit 0', async () => {
    const port = await freePort();
    const r = start(['bootstrap'], { WIDESCAN_REDIS_URL: redis.url, WIDESCAN_LISTENER_TOKEN: randomBytes(16).toString('hex'), PORT: String(port), HOST: '127.0.0.1' }, 'restricted');
    await waitLogged(r, 'bootstrap service listening');
    expect(procStatus(r.child.pid!)).toMatchObject({ uid: 10001, capEff: 0n, noNewPrivs: 1 });
    await eventually(async () => (await httpStatus(`http://127.0.0.1:${port}/readyz`)) === 200, 10_000, 'bootstrap /readyz');
    const panel = await fetch(`http://127.0.0.1:${port}/`);
    expect(panel.status).toBe(200);
    expect(await panel.text()).toMatch(/<html/i);
    await stopCleanly(r);
    expect(logged(r, 'bootstrap service stopped')).toBeDefined();
  });

  test('operator: uid 10001, no capability; takes the Lease, serves /readyz; SIGTERM → exit 0 and the Lease released', async () => {
    const port = await freePort();
    const kubeconfig = publicFile('kubeconfig', readFileSync(apiServer.kubeconfig, 'utf8'));
    const config = publicFile('operator.yaml', 'namespace: widescan\nimage: x\n');
    const r = start(
      ['operator'],
      { WIDESCAN_OPERATOR_CONFIG: config, WIDESCAN_REDIS_URL: redis.url, KUBECONFIG: kubeconfig, WIDESCAN_METRICS_PORT: String(port), POD_NAME: 'image-test', POD_NAMESPACE: 'widescan' },
      'restricted',
    );
    await waitLogged(r, 'leading: starting the controller');
    expect(procStatus(r.child.pid!)).toMatchObject({ uid: 10001, capEff: 0n, noNewPrivs: 1 });
    const lease = async () => (await api('GET', '/apis/coordination.k8s.io/v1/namespaces/widescan/leases/widescan-operator')).body.spec?.holderIdentity as string | undefined;
    expect(await lease()).toMatch(/^image-test_[0-9a-f]{8}$/);
    await eventually(async () => (await httpStatus(`http://127.0.0.1:${port}/readyz`)) === 200, 10_000, 'operator /readyz');
    await stopCleanly(r);
    expect(await lease()).toBe('');
  });

  test('worker: uid 0 with only NET_RAW, no privilege escalation, own network namespace; opens its raw socket, ready on Redis; SIGTERM → exit 0', async () => {
    const port = await freePort();
    const r = start(['worker'], { WIDESCAN_REDIS_URL: socketRedis.url, WIDESCAN_HARDWARE: 'cpu', WIDESCAN_METRICS_PORT: String(port) }, 'netRaw');
    expect(await waitLogged(r, 'worker started')).toMatchObject({ io: 'sendmmsg', hardware: 'cpu' });
    expect(procStatus(r.child.pid!)).toMatchObject({ uid: 0, capEff: CAP_NET_RAW, noNewPrivs: 1 });
    expect(procStatus(r.child.pid!).netns).not.toBe(ownNetns());
    await eventually(async () => (await httpStatus(`http://127.0.0.1:${port}/readyz`, r.child.pid)) === 200, 10_000, 'worker /readyz');
    await stopCleanly(r);
  });

  test('listener: uid 0 with only NET_RAW, no privilege escalation, own network namespace; serves /readyz; SIGTERM → exit 0', async () => {
    const port = await freePort();
    const r = start(['listener'], { WIDESCAN_NETWORK_KEY: randomBytes(32).toString('hex'), WIDESCAN_METRICS_PORT: String(port) }, 'netRaw');
    expect(await waitLogged(r, 'listener started')).toMatchObject({ io: 'sendmmsg' });
    expect(procStatus(r.child.pid!)).toMatchObject({ uid: 0, capEff: CAP_NET_RAW, noNewPrivs: 1 });
    await eventually(async () => (await httpStatus(`http://127.0.0.1:${port}/readyz`, r.child.pid)) === 200, 10_000, 'listener /readyz');
    await stopCleanly(r);
  });

  test.each([
    ['uid 0 without NET_RAW', 'rootNoCapabilities'],
    ['uid 10001 with NET_RAW added (no file capability, so it never reaches the process)', 'nonRootNetRaw'],
  ] as const)('no raw socket as %s: the worker fails at start with EPERM', async (_what, sandbox) => {
    const r = start(['worker'], { WIDESCAN_REDIS_URL: socketRedis.url }, sandbox);
    const { code } = await r.exit;
    expect(code).not.toBe(0);
    expect(r.output()).toMatch(/EPERM|Operation not permitted/);
  });
});
