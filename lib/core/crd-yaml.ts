// The YAML rendering of the WidescanJob CRD: `npm run gen:crd` writes it to crds/widescanjobs.widescan.dev.yaml, and a unit
// test checks that the committed file is still what the schema renders to.

import { stringify } from 'yaml';
import { customResourceDefinition } from './schema.js';

export const CRD_HEADER = '# Generated from lib/core/schema.ts by `npm run gen:crd`; do not edit.';

export function crdYaml(): string {
  // One line per description (readable diffs); no anchors for the schema's shared objects (plain YAML for every tool).
  return `${CRD_HEADER}\n${stringify(customResourceDefinition(), { lineWidth: 0, aliasDuplicateObjects: false })}`;
}
