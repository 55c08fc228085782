#!/usr/bin/env node
// The container image's entrypoint: its first argument picks the component, so one image serves the operator,
// worker, listener and bootstrap pods and the `widescan` CLI. Each component reads its settings from the
// environment (see its main.ts).
const COMPONENTS: Record<string, string> = {
  operator: '../operator/main.js',
  worker: '../worker/main.js',
  listener: '../listener/main.js',
  bootstrap: '../bootstrap/main.js',
  widescan: './main.js',
};

const [component] = process.argv.slice(2);
const target = component === undefined ? undefined : COMPONENTS[component];
if (!target) {
  process.stderr.write(`usage: entrypoint <${Object.keys(COMPONENTS).join('|')}> [args…]; got ${JSON.stringify(component ?? '')}\n`);
  process.exit(2);
}
// The CLI parses process.argv itself: drop the component name so `entrypoint widescan run x` is `widescan run x`.
process.argv.splice(2, 1);
await import(target);
