// widescan control panel: plain DOM, no framework, no build step. Served under a strict CSP
// (`default-src 'self'`), so there is no inline script or style anywhere, and every piece of text that
// comes from the server is inserted with textContent: peer, job and reason strings are untrusted.

const TOKEN_KEY = 'widescan.adminToken';
const MIN_TOKEN_LENGTH = 16;
const JOBS_REFRESH_MS = 1000;
const PHASES = ['pending', 'running', 'succeeded', 'failed', 'suspended'];

const $ = (id) => {
  const node = document.querySelector(`[data-testid="${id}"]`);
  if (!node) throw new Error(`panel markup lacks [data-testid="${id}"]`);
  return node;
};

const ui = {
  status: $('status'),
  signin: $('signin'),
  signinForm: $('signin-form'),
  tokenInput: $('token-input'),
  signinButton: $('signin-button'),
  signout: $('signout'),
  nav: $('nav'),
  app: $('app'),
  jobsBody: $('jobs-body'),
  peersFilters: $('peers-filters'),
  filterKind: $('filter-kind'),
  filterJob: $('filter-job'),
  filterSince: $('filter-since'),
  filterLimit: $('filter-limit'),
  peersCaption: $('peers-caption'),
  peersBody: $('peers-body'),
  peersFirst: $('peers-first'),
  peersNext: $('peers-next'),
  peersPage: $('peers-page'),
  blockedBody: $('blocked-body'),
  authorityMode: $('authority-mode'),
  authorityExplain: $('authority-explain'),
  authorityBody: $('authority-body'),
  blockDialog: $('block-dialog'),
  blockAddress: $('block-address'),
  blockReason: $('block-reason'),
};

// ---------- small DOM helpers ----------

/** An element with text and attributes; children are nodes or strings (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = String(value);
    else if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) node.append(child); // append() inserts strings as text, never as markup
  return node;
}

function cell(label, ...children) {
  return h('td', { 'data-label': label }, ...children);
}

function emptyRow(columns, text) {
  return h('tr', { class: 'empty' }, h('td', { colspan: columns, text }));
}

const numberFormat = new Intl.NumberFormat();
function formatNumber(value) {
  return typeof value === 'number' && Number.isFinite(value) ? numberFormat.format(value) : '—';
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
/** A `<time>` for an ISO string from the server; text that is not a date is shown as it came. */
function timeElement(iso) {
  if (typeof iso !== 'string' || iso === '') return document.createTextNode('—');
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return document.createTextNode(iso);
  return h('time', { datetime: iso, title: iso, text: dateFormat.format(date) });
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
function relativeTime(ms) {
  const seconds = Math.round(ms / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relativeFormat.format(seconds, 'second');
  if (abs < 3600) return relativeFormat.format(Math.round(seconds / 60), 'minute');
  if (abs < 86400) return relativeFormat.format(Math.round(seconds / 3600), 'hour');
  return relativeFormat.format(Math.round(seconds / 86400), 'day');
}

// ---------- status region ----------

let statusSource = '';

/** One polite live region for loading notes, results and errors; `source` lets a later success clear its own error. */
function say(message, { error = false, source = '' } = {}) {
  if (ui.status.textContent === message && ui.status.classList.contains('error') === error) return; // no re-announcing
  ui.status.textContent = message;
  ui.status.classList.toggle('error', error);
  statusSource = source;
}

function clearStatus(source) {
  if (statusSource === source) say('');
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let token = '';
/** True once the token has been accepted; a 401 after that ends the session. */
let signedIn = false;
/** Bumped on every sign-in and sign-out, so answers that arrive for an earlier session are dropped. */
let session = 0;

/**
 * Calls `api/v1/<path>` relative to the page, so the panel also works behind a proxy that serves it under
 * a sub-path. Admin calls carry the token; a 401 there ends the session.
 */
async function api(path, { method = 'GET', body, admin = true } = {}) {
  const headers = { accept: 'application/json' };
  if (admin) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const started = session;
  let res;
  try {
    res = await fetch(new URL(`api/v1/${path}`, document.baseURI), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err instanceof Error ? err.message : String(err)})`);
  }
  let data = null;
  if ((res.headers.get('content-type') ?? '').includes('json')) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const message = data !== null && typeof data.error === 'string' ? data.error : `HTTP ${res.status} ${res.statusText}`.trim();
    if (res.status === 401 && admin && started === session && signedIn) {
      signOut(`Signed out: the server refused the admin token (${message}). Sign in again.`, true);
    }
    throw new ApiError(res.status, message);
  }
  if (data === null) throw new ApiError(res.status, 'the server answered without a JSON body');
  return data;
}

/** Shows a failed call in the status region, unless it signed the user out (that message is already shown). */
function report(what, err, source) {
  if (err instanceof ApiError && err.status === 401) return;
  const message = err instanceof Error ? err.message : String(err);
  say(`${what}: ${message}`, { error: true, source });
}

// ---------- sign-in ----------

function showSignedIn(yes) {
  ui.signin.hidden = yes;
  ui.app.hidden = !yes;
  ui.nav.hidden = !yes;
  ui.signout.hidden = !yes;
}

function signOut(message, error = false) {
  session++;
  token = '';
  signedIn = false;
  sessionStorage.removeItem(TOKEN_KEY);
  stopJobsRefresh();
  if (ui.blockDialog.open) {
    pendingBlock = null;
    ui.blockDialog.close();
  }
  Object.assign(peerState, { cursor: null, nextCursor: null, page: 1 });
  // Nothing the admin saw stays in the page once signed out.
  for (const body of [ui.jobsBody, ui.peersBody, ui.blockedBody, ui.authorityBody]) body.replaceChildren();
  jobRows.clear();
  showSignedIn(false);
  ui.tokenInput.value = '';
  say(message, { error, source: 'session' });
  ui.tokenInput.focus();
}

/** Checks the token with an admin call before showing anything; true when signed in. */
async function signIn(candidate, { restoring = false } = {}) {
  token = candidate;
  const current = ++session;
  say('Signing in…', { source: 'session' });
  ui.signinButton.disabled = true;
  try {
    const data = await api('jobs');
    if (current !== session) return false;
    sessionStorage.setItem(TOKEN_KEY, candidate);
    signedIn = true;
    showSignedIn(true);
    say('Signed in.', { source: 'session' });
    renderJobs(data);
    scheduleJobsRefresh();
    void loadPeers();
    void loadBlocked();
    void loadAuthority();
    if (!restoring) document.getElementById('jobs-title')?.focus();
    return true;
  } catch (err) {
    if (current !== session) return false;
    // A 503 says itself what is missing ("admin disabled: no admin token is configured …").
    const why =
      err instanceof ApiError && err.status === 401 ? `the server refused this admin token (${err.message})` : err instanceof Error ? err.message : String(err);
    signOut(`${restoring ? 'Could not restore the session' : 'Sign-in failed'}: ${why}.`, true);
    return false;
  } finally {
    ui.signinButton.disabled = false;
  }
}

ui.signinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const candidate = ui.tokenInput.value.trim();
  let problem = '';
  if (candidate.length < MIN_TOKEN_LENGTH) problem = `Admin token: enter the full token (at least ${MIN_TOKEN_LENGTH} characters).`;
  else if (/\s/.test(candidate)) problem = 'Admin token: a token has no spaces or line breaks inside it.';
  ui.tokenInput.setAttribute('aria-invalid', problem ? 'true' : 'false');
  if (problem) {
    say(problem, { error: true, source: 'session' });
    ui.tokenInput.focus();
    return;
  }
  void signIn(candidate);
});

ui.signout.addEventListener('click', () => signOut('Signed out.'));

// ---------- jobs ----------

/** Rows by job id, updated in place so a refresh every second does not rebuild the table. */
const jobRows = new Map();
let jobsTimer = 0;
let jobsInFlight = false;

function stopJobsRefresh() {
  clearTimeout(jobsTimer);
  jobsTimer = 0;
}

function scheduleJobsRefresh() {
  stopJobsRefresh();
  if (signedIn && document.visibilityState === 'visible') jobsTimer = setTimeout(refreshJobs, JOBS_REFRESH_MS);
}

async function refreshJobs() {
  if (jobsInFlight) return; // the call under way schedules the next one
  jobsInFlight = true;
  const current = session;
  try {
    const data = await api('jobs');
    if (current !== session) return;
    renderJobs(data);
    clearStatus('jobs');
  } catch (err) {
    if (current !== session) return;
    report('Jobs could not be refreshed', err, 'jobs');
  } finally {
    jobsInFlight = false;
  }
  if (current === session) scheduleJobsRefresh();
}

document.addEventListener('visibilitychange', () => {
  if (!signedIn) return;
  if (document.visibilityState === 'visible') void refreshJobs();
  else stopJobsRefresh();
});

function jobRow() {
  const idCell = h('th', { scope: 'row' });
  const phase = h('span', { class: 'phase' });
  const bar = h('progress', { max: 100 });
  const percent = h('span', { class: 'percent' });
  const probes = cell('Probes sent');
  const replies = cell('Valid replies');
  const peers = cell('Peers');
  const eta = cell('ETA');
  const row = h(
    'tr',
    { 'data-testid': 'job-row' },
    idCell,
    cell('Phase', phase),
    cell('Progress', h('span', { class: 'progress' }, bar, percent)),
    probes,
    replies,
    peers,
    eta,
  );
  for (const c of [probes, replies, peers]) c.classList.add('num');
  bar.setAttribute('data-testid', 'job-progress');
  percent.setAttribute('data-testid', 'job-percent');
  return { row, idCell, phase, bar, percent, probes, replies, peers, eta };
}

function etaNode(job) {
  if (typeof job.completionTime === 'string') return h('span', {}, 'finished ', timeElement(job.completionTime));
  if (typeof job.estimatedCompletionTime === 'string') {
    const at = new Date(job.estimatedCompletionTime);
    if (!Number.isNaN(at.getTime())) {
      return h('time', { datetime: job.estimatedCompletionTime, title: dateFormat.format(at), text: relativeTime(at.getTime() - Date.now()) });
    }
  }
  if (job.phase !== 'Running') return document.createTextNode('—');
  // Every shard is done: a job stays Running for the reply timeout, so that late replies still count.
  return document.createTextNode(job.progress === '100%' ? 'collecting late replies' : 'estimating…');
}

function renderJobs(data) {
  const jobs = Array.isArray(data?.jobs) ? data.jobs : [];
  const seen = new Set();
  const ordered = [];
  for (const job of jobs) {
    if (job === null || typeof job !== 'object') continue;
    const id = String(job.id ?? '');
    seen.add(id);
    let r = jobRows.get(id);
    if (!r) {
      r = jobRow();
      r.row.dataset.jobId = id;
      r.idCell.textContent = id;
      jobRows.set(id, r);
    }
    const phase = String(job.phase ?? 'unknown');
    r.phase.textContent = phase;
    r.phase.className = `phase phase-${PHASES.includes(phase.toLowerCase()) ? phase.toLowerCase() : 'unknown'}`;
    const progress = String(job.progress ?? '');
    const match = /^(\d{1,3}(?:\.\d+)?)%$/.exec(progress);
    if (match) {
      const value = Math.min(100, Math.max(0, Number(match[1])));
      r.bar.value = value;
      r.percent.textContent = `${value}%`;
    } else {
      r.bar.removeAttribute('value'); // indeterminate: the server sent something that is not a percentage
      r.percent.textContent = progress || '—';
    }
    r.bar.setAttribute('aria-label', `Progress of job ${id}`);
    r.probes.textContent = formatNumber(job.probesSent);
    r.replies.textContent = formatNumber(job.repliesValid);
    const widescan = typeof job.widescanPeers === 'number' && job.widescanPeers > 0;
    r.peers.replaceChildren(
      h('span', {}, formatNumber(job.peersDiscovered), widescan ? h('span', { class: 'hint', text: ` (${formatNumber(job.widescanPeers)} widescan)` }) : ''),
    );
    r.eta.replaceChildren(etaNode(job));
    ordered.push(r.row);
  }
  for (const id of [...jobRows.keys()]) if (!seen.has(id)) jobRows.delete(id);
  ui.jobsBody.replaceChildren(...(ordered.length > 0 ? ordered : [emptyRow(7, 'No jobs are registered.')]));
}

// ---------- peers ----------

const peerState = { query: new URLSearchParams({ limit: '25' }), cursor: null, nextCursor: null, page: 1, describe: '' };

function readFilters() {
  const query = new URLSearchParams();
  const described = [];
  for (const field of [ui.filterKind, ui.filterJob, ui.filterSince]) field.setAttribute('aria-invalid', 'false');
  if (ui.filterKind.value) {
    query.set('kind', ui.filterKind.value);
    described.push(`kind ${ui.filterKind.value}`);
  }
  const job = ui.filterJob.value.trim();
  if (job) {
    query.set('job', job);
    described.push(`job ${job}`);
  }
  if (ui.filterSince.value) {
    // datetime-local has no zone: it is the browser's local time, sent to the server as UTC.
    const since = new Date(ui.filterSince.value);
    if (Number.isNaN(since.getTime())) {
      ui.filterSince.setAttribute('aria-invalid', 'true');
      throw new Error('First seen since: enter a date and time');
    }
    query.set('since', since.toISOString());
    described.push(`first seen since ${dateFormat.format(since)}`);
  }
  query.set('limit', ui.filterLimit.value);
  return { query, describe: described.join(', ') };
}

async function loadPeers() {
  const current = session;
  const query = new URLSearchParams(peerState.query);
  if (peerState.cursor !== null) query.set('cursor', peerState.cursor);
  ui.peersNext.disabled = true;
  ui.peersFirst.disabled = true;
  ui.peersBody.setAttribute('aria-busy', 'true');
  try {
    const data = await api(`peers?${query}`, { admin: false });
    if (current !== session) return;
    peerState.nextCursor = typeof data.nextCursor === 'string' ? data.nextCursor : null;
    renderPeers(Array.isArray(data.peers) ? data.peers : []);
    clearStatus('peers');
  } catch (err) {
    if (current !== session) return;
    // Rows of an earlier query under the new caption would mislead, and its cursor belongs to that query.
    peerState.nextCursor = null;
    ui.peersBody.replaceChildren(emptyRow(7, 'Peers could not be loaded; see the message above.'));
    const field = { kind: ui.filterKind, job: ui.filterJob, since: ui.filterSince }[String(err.message).split(':')[0]];
    field?.setAttribute('aria-invalid', 'true');
    report('Peers could not be loaded', err, 'peers');
  } finally {
    ui.peersBody.removeAttribute('aria-busy');
    updatePager();
  }
}

function updatePager() {
  ui.peersNext.disabled = peerState.nextCursor === null;
  ui.peersFirst.disabled = peerState.page === 1;
  ui.peersPage.textContent = `Page ${peerState.page}`;
  ui.peersCaption.textContent =
    `Known peers, page ${peerState.page}` + (peerState.describe ? `, filtered by ${peerState.describe}` : '');
}

function peerRow(peer) {
  const address = String(peer.address ?? '');
  const kind = String(peer.kind ?? '');
  const addressCell = h('th', { scope: 'row' }, h('code', { text: address }));
  if (kind === 'node') {
    // A node names itself and its port when it announces; both are untrusted text like the rest.
    const about = [peer.id !== undefined ? `id ${peer.id}` : '', peer.port !== undefined ? `port ${peer.port}` : ''].filter(Boolean).join(', ');
    if (about) addressCell.append(h('span', { class: 'hint node-about', text: about }));
  }
  const block = h('button', { type: 'button', class: 'danger small', 'data-testid': 'block-button', 'aria-label': `Block ${address}`, text: 'Block' });
  block.addEventListener('click', () => askBlock(address, block));
  const row = h(
    'tr',
    { 'data-testid': 'peer-row' },
    addressCell,
    cell('Kind', h('span', { class: `kind kind-${['host', 'widescan', 'node'].includes(kind) ? kind : 'unknown'}`, text: kind })),
    cell('Job', typeof peer.job === 'string' && peer.job !== '' ? peer.job : '—'),
    cell('RTT', typeof peer.rttMs === 'number' ? `${peer.rttMs.toFixed(1)} ms` : '—'),
    cell('First seen', timeElement(peer.firstSeen)),
    cell('Last seen', timeElement(peer.lastSeen)),
    cell('Actions', block),
  );
  row.cells[3].classList.add('num');
  row.dataset.address = address;
  return row;
}

function renderPeers(peers) {
  const rows = peers.filter((p) => p !== null && typeof p === 'object').map(peerRow);
  ui.peersBody.replaceChildren(...(rows.length > 0 ? rows : [emptyRow(7, peerState.page === 1 ? 'No peers match these filters.' : 'No more peers.')]));
}

ui.peersFilters.addEventListener('submit', (event) => {
  event.preventDefault();
  try {
    const { query, describe } = readFilters();
    Object.assign(peerState, { query, describe, cursor: null, nextCursor: null, page: 1 });
  } catch (err) {
    say(err.message, { error: true, source: 'peers' });
    return;
  }
  say('Loading peers…', { source: 'peers' });
  void loadPeers();
});

ui.peersNext.addEventListener('click', () => {
  if (peerState.nextCursor === null) return;
  peerState.cursor = peerState.nextCursor;
  peerState.page++;
  void loadPeers();
});

ui.peersFirst.addEventListener('click', () => {
  peerState.cursor = null;
  peerState.page = 1;
  void loadPeers();
});

// ---------- block / unblock ----------

let pendingBlock = null;

function askBlock(address, button) {
  pendingBlock = { address, button };
  ui.blockAddress.textContent = address;
  ui.blockReason.value = '';
  ui.blockDialog.returnValue = '';
  ui.blockDialog.showModal();
}

ui.blockDialog.addEventListener('close', () => {
  const pending = pendingBlock;
  pendingBlock = null;
  if (pending === null) return;
  if (ui.blockDialog.returnValue !== 'block') {
    pending.button.focus();
    return;
  }
  void block(pending.address, ui.blockReason.value.trim());
});

/** After a row goes, focus moves to the same control in its neighbour so keyboard users keep their place. */
function removeRow(row, fallbackFocus) {
  const neighbour = row.nextElementSibling ?? row.previousElementSibling;
  row.remove();
  const next = neighbour?.querySelector('button');
  (next ?? fallbackFocus).focus();
}

async function block(address, reason) {
  const current = session;
  const body = { blocked: true };
  if (reason) body.reason = reason;
  try {
    const result = await api(`peers/${encodeURIComponent(address)}/block`, { method: 'POST', body });
    if (current !== session) return;
    const row = [...ui.peersBody.rows].find((r) => r.dataset.address === address);
    if (row) removeRow(row, document.getElementById('peers-title'));
    say(`Blocked ${result.address ?? address}: it is no longer served.`, { source: 'block' });
    if (ui.peersBody.rows.length === 0) void loadPeers();
    void loadBlocked();
  } catch (err) {
    if (current === session) report(`Could not block ${address}`, err, 'block');
  }
}

async function unblock(address) {
  const current = session;
  try {
    const result = await api(`peers/${encodeURIComponent(address)}/block`, { method: 'POST', body: { blocked: false } });
    if (current !== session) return;
    const row = [...ui.blockedBody.rows].find((r) => r.dataset.address === address);
    if (row) removeRow(row, document.getElementById('blocked-title'));
    if (ui.blockedBody.rows.length === 0) ui.blockedBody.replaceChildren(emptyRow(4, 'No peers are blocked.'));
    say(`Unblocked ${result.address ?? address}: listeners may report it again.`, { source: 'block' });
    void loadPeers();
  } catch (err) {
    if (current === session) report(`Could not unblock ${address}`, err, 'block');
  }
}

async function loadBlocked() {
  const current = session;
  try {
    const data = await api('peers/blocked');
    if (current !== session) return;
    const entries = Array.isArray(data.blocked) ? data.blocked : [];
    const rows = entries
      .filter((b) => b !== null && typeof b === 'object')
      .map((b) => {
        const address = String(b.address ?? '');
        const button = h('button', { type: 'button', class: 'secondary small', 'data-testid': 'unblock-button', 'aria-label': `Unblock ${address}`, text: 'Unblock' });
        button.addEventListener('click', () => void unblock(address));
        const row = h(
          'tr',
          { 'data-testid': 'blocked-row' },
          h('th', { scope: 'row' }, h('code', { text: address })),
          cell('Reason', typeof b.reason === 'string' && b.reason !== '' ? b.reason : '—'),
          cell('Blocked at', timeElement(b.at)),
          cell('Actions', button),
        );
        row.dataset.address = address;
        return row;
      });
    ui.blockedBody.replaceChildren(...(rows.length > 0 ? rows : [emptyRow(4, 'No peers are blocked.')]));
  } catch (err) {
    if (current === session) report('Blocked peers could not be loaded', err, 'blocked');
  }
}

// ---------- authority ----------

function selectContents(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = getSelection();
  selection?.removeAllRanges();
  selection?.addRange(range);
}

async function copyKey(text, code) {
  try {
    // Absent outside secure contexts (plain http to a non-local host): fall back to a selection.
    await navigator.clipboard.writeText(text);
    say('Public key copied to the clipboard.', { source: 'copy' });
  } catch {
    selectContents(code);
    say('The browser did not allow copying; the key is selected: press Ctrl+C (⌘C on a Mac) to copy it.', { source: 'copy' });
  }
}

async function loadAuthority() {
  const current = session;
  try {
    const data = await api('authority', { admin: false });
    if (current !== session) return;
    const mode = String(data.mode ?? 'unknown');
    ui.authorityMode.textContent = mode;
    ui.authorityExplain.textContent =
      mode === 'authority'
        ? 'Peer lists and announce replies are signed (X-Widescan-Signature) with the keys below; clients pin these public keys.'
        : 'Peer lists are not signed: clients judge peers on their own.';
    const keys = Array.isArray(data.keys) ? data.keys : [];
    const rows = keys
      .filter((k) => k !== null && typeof k === 'object')
      .map((k) => {
        const id = String(k.id ?? '');
        const publicKey = String(k.publicKey ?? '');
        const code = h('code', { class: 'key', text: publicKey });
        const copy = h('button', { type: 'button', class: 'secondary small', 'data-testid': 'copy-key', 'aria-label': `Copy public key ${id}`, text: 'Copy' });
        copy.addEventListener('click', () => void copyKey(publicKey, code));
        let state;
        if (k.current === true) state = h('span', { class: 'badge current', text: 'current' });
        else if (typeof k.retiresAt === 'string') state = h('span', {}, h('span', { class: 'badge retiring', text: 'retiring' }), ' at ', timeElement(k.retiresAt));
        else state = h('span', { class: 'badge', text: 'previous' });
        return h('tr', { 'data-testid': 'authority-key' }, h('th', { scope: 'row' }, h('code', { text: id })), cell('Public key', h('span', { class: 'keycell' }, code, copy)), cell('State', state));
      });
    ui.authorityBody.replaceChildren(...(rows.length > 0 ? rows : [emptyRow(3, 'No signing keys: this server does not sign peer lists.')]));
  } catch (err) {
    if (current === session) report('Authority could not be loaded', err, 'authority');
  }
}

// ---------- start ----------

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) void signIn(saved, { restoring: true });
else showSignedIn(false);
