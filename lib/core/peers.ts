// The peer list's contract, shared by the bootstrap service and its clients (one definition, so the two
// cannot drift): peer kinds, node identifiers, page sizes.

export const PEER_KINDS = ['host', 'widescan', 'node'] as const;
export type PeerKind = (typeof PEER_KINDS)[number];

/** A P2P node's identifier, as announce accepts it. */
export const NODE_ID_PATTERN = '^[A-Za-z0-9._:-]{1,128}$';
export const NODE_ID_RE = new RegExp(NODE_ID_PATTERN);

/** Largest page of `GET /api/v1/peers`. */
export const MAX_PAGE_LIMIT = 1000;
