// Writes crds/widescanjobs.widescan.dev.yaml, and the Helm chart's copy of it, from lib/core/schema.ts. Run it
// as `npm run gen:crd` (which builds dist/ first); tests fail while either file differs from the schema.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { crdYaml } from '../dist/lib/core/crd-yaml.js';

for (const path of ['../crds/widescanjobs.widescan.dev.yaml', '../charts/widescan/files/crd.yaml']) {
  const target = fileURLToPath(new URL(path, import.meta.url));
  writeFileSync(target, crdYaml());
  console.log(`wrote ${target}`);
}
