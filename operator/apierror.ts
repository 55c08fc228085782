// Reading @kubernetes/client-node's errors, once for the controller, the informer and the leader elector.

/**
 * The HTTP status of a failed API call: an ApiException carries it in `code`, a refused watch request in
 * `statusCode`; network errors carry string codes (ECONNRESET) and give undefined.
 */
export function apiStatus(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | null | undefined;
  if (typeof e?.code === 'number') return e.code;
  return typeof e?.statusCode === 'number' ? e.statusCode : undefined;
}

/** For logs: an ApiException's message repeats headers and the body JSON; the Status message is what tells. */
export function apiErrorSummary(err: unknown): unknown {
  const body = (err as { body?: unknown } | null | undefined)?.body;
  if (typeof body !== 'string') return err;
  try {
    return { code: apiStatus(err), message: (JSON.parse(body) as { message?: string }).message };
  } catch {
    return { code: apiStatus(err), message: body.slice(0, 300) };
  }
}
