// Writes crds/widescanjobs.widescan.dev.yaml from lib/core/schema.ts. Run it as `npm run gen:crd` (which builds dist/ first).
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { crdYaml } from '../dist/lib/core/crd-yaml.js';

const target = fileURLToPath(new URL('../crds/widescanjobs.widescan.dev.yaml', import.meta.url));
writeFileSync(target, crdYaml());
console.log(`wrote ${target}`);
