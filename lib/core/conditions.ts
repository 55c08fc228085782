// Status conditions the way the Kubernetes API conventions define them: one entry per type, set on first
// sight, `lastTransitionTime` moved only when `status` flips, each carrying the generation it describes.

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

export type ConditionUpdate = Pick<Condition, 'type' | 'status' | 'reason' | 'message'>;

/**
 * `conditions` with each update applied: a new type is appended, a known one keeps its
 * `lastTransitionTime` unless its status changed. Returns a new array; the input is not modified.
 */
export function setConditions(conditions: readonly Condition[] | undefined, updates: readonly ConditionUpdate[], generation: number, now: Date): Condition[] {
  const out = (conditions ?? []).map((c) => ({ ...c }));
  for (const u of updates) {
    const i = out.findIndex((c) => c.type === u.type);
    const prev = i >= 0 ? out[i] : undefined;
    const next: Condition = {
      ...u,
      observedGeneration: generation,
      lastTransitionTime: prev && prev.status === u.status ? prev.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    };
    if (prev) out[i] = next;
    else out.push(next);
  }
  return out;
}
