// Flywheel console: a small single-page app over the JSON API (/v1/...). No framework,
// no build step, nothing loaded from outside this server. The reviewer's token lives in
// sessionStorage (this tab only). Views are <template>s in index.html, filled with
// textContent, so nothing from the API is ever parsed as HTML.
'use strict';

const STORE = { token: 'flywheel.token', name: 'flywheel.reviewer', me: 'flywheel.me' };
const SVG = 'http://www.w3.org/2000/svg';
const main = document.getElementById('main');

// ---------------------------------------------------------------- API and helpers

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `request failed (${status})`);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, { keepalive = false } = {}) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(STORE.token);
  const name = sessionStorage.getItem(STORE.name);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (name) headers['X-Flywheel-Reviewer'] = name;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    keepalive,
  });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    if (resp.status === 401 && location.hash !== '#/signin') {
      signOut('Your session ended; sign in again.');
    }
    throw new ApiError(resp.status, err.code, err.message);
  }
  return data;
}

const enc = encodeURIComponent;

function template(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

function field(root, name) {
  return root.querySelector(`[data-field="${name}"]`);
}

function setText(root, name, text) {
  field(root, name).textContent = text == null ? '' : String(text);
}

function h(tag, text, cls) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

let toastTimer = null;
function toast(message, bad = false) {
  const node = document.getElementById('toast');
  node.textContent = message;
  node.className = `toast show${bad ? ' bad' : ''}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.className = 'toast'; }, 2600);
}

function show(node, title) {
  main.replaceChildren(node);
  document.title = `${title} · Flywheel console`;
}

function showError(err) {
  const box = h('div', null, 'card');
  box.append(h('h1', 'Something went wrong'), h('p', err.message, 'error'));
  const back = h('a', 'Back to the queues');
  back.href = '#/queues';
  box.append(back);
  show(box, 'Error');
}

function age(ms) {
  if (ms == null) return '—';
  const min = ms / 60000;
  if (min < 1) return 'now';
  if (min < 60) return `${Math.floor(min)} min`;
  if (min < 60 * 48) return `${Math.floor(min / 60)} h`;
  return `${Math.floor(min / 1440)} d`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

function pct(v) {
  return v == null ? '—' : `${Math.round(v * 100)}%`;
}

// ---------------------------------------------------------------- session

function me() {
  try { return JSON.parse(sessionStorage.getItem(STORE.me)); } catch { return null; }
}

function signOut(message) {
  releaseHeld();
  for (const key of Object.values(STORE)) sessionStorage.removeItem(key);
  signInMessage = message || '';
  if (location.hash === '#/signin') route(); else location.hash = '#/signin';
}

let signInMessage = '';

function renderSignIn() {
  const node = template('tpl-signin');
  show(node, 'Sign in');
  const error = node.querySelector('#signin-error');
  if (signInMessage) { error.textContent = signInMessage; error.hidden = false; signInMessage = ''; }
  const form = node.querySelector('#signin-form');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = form.token.value.trim();
    const name = form.reviewer.value.trim();
    if (token) sessionStorage.setItem(STORE.token, token); else sessionStorage.removeItem(STORE.token);
    if (name) sessionStorage.setItem(STORE.name, name); else sessionStorage.removeItem(STORE.name);
    try {
      const who = await api('GET', '/v1/whoami');
      if (who.role === 'ingest') throw new Error('This token can only submit events; ask for a reviewer token.');
      sessionStorage.setItem(STORE.me, JSON.stringify(who));
      location.hash = '#/queues';
    } catch (e) {
      sessionStorage.removeItem(STORE.token);
      error.textContent = e.status === 401 ? 'That token was not accepted.' : e.message;
      error.hidden = false;
      form.token.focus();
    }
  });
  form.token.focus();
}

// ---------------------------------------------------------------- queues

async function renderQueues() {
  const node = template('tpl-queues');
  const { queues } = await api('GET', '/v1/queues');
  const list = node.querySelector('#queue-list');
  node.querySelector('#no-queues').hidden = queues.length > 0;
  for (const q of queues) {
    const card = template('tpl-queue-card');
    const link = field(card, 'link');
    link.textContent = q.name;
    link.href = `#/review/${enc(q.name)}`;
    link.dataset.queue = q.name;
    link.setAttribute('aria-label', `Review ${q.name}: ${q.pending} pending`);
    setText(card, 'description', q.description || (q.reviewers_required > 1
      ? `Each item needs ${q.reviewers_required} reviewers.` : 'Named by a router.'));
    setText(card, 'pending', q.pending);
    setText(card, 'in_review', q.in_review);
    setText(card, 'done', q.done);
    setText(card, 'oldest', age(q.oldest_pending_age_ms));
    const total = q.pending + q.in_review + q.done;
    if (total > 0) {
      field(card, 'bar-done').style.width = `${(100 * q.done) / total}%`;
      field(card, 'bar-review').style.width = `${(100 * q.in_review) / total}%`;
    }
    list.append(card);
  }
  node.querySelector('[data-action="refresh"]').addEventListener('click', route);
  show(node, 'Queues');
}

// ---------------------------------------------------------------- review

/** The review in progress: the queue, the item held (if any), and its screen. */
let current = null;

function skipKey(queue) { return `flywheel.skip.${queue}`; }
function skipped(queue) {
  try { return JSON.parse(sessionStorage.getItem(skipKey(queue))) || []; } catch { return []; }
}

function releaseHeld() {
  if (current && current.item) {
    const { queue, item } = current;
    current.item = null;
    api('POST', `/v1/queues/${enc(queue)}/items/${enc(item.id)}/release`, undefined, { keepalive: true }).catch(() => {});
  }
}

async function renderReview(queue) {
  const screen = template('tpl-review');
  setText(screen, 'queue', queue);
  show(screen, `Review · ${queue}`);
  current = { queue, screen, item: null, event: null, busy: false, reviewed: 0 };
  await nextItem();
}

async function nextItem() {
  const state = current;
  const data = await api('POST', `/v1/queues/${enc(state.queue)}/claim`, { skip: skipped(state.queue) });
  if (current !== state) { // the reviewer left while we waited
    if (data.item) api('POST', `/v1/queues/${enc(state.queue)}/items/${enc(data.item.id)}/release`).catch(() => {});
    return;
  }
  const body = field(state.screen, 'body');
  if (!data.item) {
    state.item = null;
    const empty = template('tpl-empty-queue');
    empty.querySelector('[data-action="again"]').addEventListener('click', () => {
      sessionStorage.removeItem(skipKey(state.queue));
      nextItem().catch(showError);
    });
    body.replaceChildren(empty);
    await progress();
    return;
  }
  state.item = data.item;
  state.event = data.event;
  const instructions = field(state.screen, 'instructions');
  instructions.textContent = data.queue.instructions || '';
  instructions.hidden = !data.queue.instructions;
  body.replaceChildren(renderItem(data));
  await progress();
}

async function progress() {
  const state = current;
  const { queues } = await api('GET', '/v1/queues');
  const q = queues.find((x) => x.name === state.queue);
  const box = field(state.screen, 'progress');
  box.replaceChildren();
  if (!q) return;
  const total = q.pending + q.in_review + q.done;
  box.append(h('span', `You: ${state.reviewed} reviewed · ${q.pending} pending · ${q.in_review} in review · ${q.done} done`));
  const bar = h('span', null, 'bar');
  const done = h('span', null, 'bar-done');
  done.style.width = total ? `${(100 * q.done) / total}%` : '0';
  const held = h('span', null, 'bar-review');
  held.style.width = total ? `${(100 * q.in_review) / total}%` : '0';
  bar.append(done, held);
  bar.setAttribute('role', 'progressbar');
  bar.setAttribute('aria-label', 'Queue progress');
  bar.setAttribute('aria-valuemin', '0');
  bar.setAttribute('aria-valuemax', String(total));
  bar.setAttribute('aria-valuenow', String(q.done));
  box.append(bar);
}

function describeFeedback(f) {
  switch (f.type) {
    case 'thumbs': return `User feedback: thumbs ${f.value}`;
    case 'rating': return `User feedback: rated ${f.value} of ${f.scale}`;
    case 'correction': return `User's own correction: “${f.text}”`;
    case 'clarification': return `User asked again: “${f.text}”`;
    case 'comment': return `User commented: “${f.text}”`;
    default: return 'No explicit user feedback.';
  }
}

function describeRoute(r) {
  if (!r) return '';
  const where = r.queue ? ` → ${r.queue}` : '';
  return `${r.action}${where}${r.reason ? `: ${r.reason}` : ''}`;
}

function renderItem({ item, event }) {
  const node = template('tpl-item');
  const outcome = (event && event.outcome) || { scores: [], votes: [] };
  const action = field(node, 'action');
  action.textContent = item.action;
  if (item.action === 'review') action.classList.add('review');
  setText(node, 'item-id', item.id);
  field(node, 'item-id').dataset.item = item.id;
  setText(node, 'prompt', event && event.prompt ? `${event.prompt.name} v${event.prompt.version}${event.model ? ` · ${event.model}` : ''}` : '');
  setText(node, 'lease', item.lease ? `Held for you until ${clock(item.lease.expires_at)}` : '');
  setText(node, 'reason', item.reason || 'No reason given.');
  const votes = field(node, 'votes');
  const echo = (outcome.votes || []).length === 1 && outcome.votes[0].route.reason === item.reason;
  for (const v of echo ? [] : outcome.votes || []) {
    votes.append(h('li', `${v.plugin}: ${describeRoute(v.route)}${v.imposed ? ' (imposed: the plugin failed)' : ''}`));
  }
  const prior = item.reviews.length
    ? `${item.reviews.length} of ${item.reviews_required} reviews done (${item.reviews.map((r) => `${r.reviewer}: ${r.verdict}`).join(', ')})${item.disagreement ? ' — reviewers disagree' : ''}.`
    : (item.reviews_required > 1 ? `Needs ${item.reviews_required} reviewers; you are the first.` : '');
  setText(node, 'prior', prior);

  setText(node, 'input', event ? event.input : '(event not found)');
  setText(node, 'feedback', event ? describeFeedback(event.feedback) : '');
  setText(node, 'output', event ? event.output : '');
  const context = field(node, 'context');
  for (const passage of (event && event.context) || []) context.append(h('li', passage));
  field(node, 'no-context').hidden = context.children.length > 0;

  const scores = field(node, 'scores');
  for (const s of outcome.scores || []) {
    const row = document.createElement('tr');
    const name = h('td');
    name.append(h('strong', s.name));
    if (s.label) name.append(' ', h('span', s.label, 'pill'));
    if (s.plugin !== s.name) name.append(h('div', `by ${s.plugin}`, 'muted'));
    const value = h('td');
    const meter = h('div', null, 'meter');
    const track = h('span', null, 'track');
    const fill = h('span', null, 'fill');
    fill.style.width = `${Math.round(s.value * 100)}%`;
    track.append(fill);
    meter.append(track, h('span', s.value.toFixed(2)));
    meter.setAttribute('aria-label', `${s.name} ${s.value.toFixed(2)}`);
    value.append(meter);
    row.append(name, value, h('td', s.reason || '—', s.reason ? '' : 'muted'));
    scores.append(row);
  }
  if (!scores.children.length) {
    const row = document.createElement('tr');
    const cell = h('td', 'No scores recorded.', 'muted');
    cell.colSpan = 3;
    row.append(cell);
    scores.append(row);
  }

  const stars = field(node, 'rating');
  for (let n = 1; n <= 5; n += 1) {
    const label = document.createElement('label');
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'rating';
    input.value = String(n);
    input.id = `rating-${n}`;
    label.append(input, h('span', n));
    label.title = `Rate ${n} of 5`;
    stars.append(label);
  }
  node.querySelector('[data-action="copy-output"]').addEventListener('click', () => {
    const box = node.querySelector('#correction');
    box.value = event ? event.output : '';
    box.focus();
  });
  node.querySelector('#approve').addEventListener('click', () => submit('approve'));
  node.querySelector('#reject').addEventListener('click', () => submit('reject'));
  node.querySelector('#skip').addEventListener('click', skip);
  return node;
}

function setBusy(busy) {
  current.busy = busy;
  for (const b of current.screen.querySelectorAll('.actions button')) b.disabled = busy;
}

async function submit(verdict) {
  const state = current;
  if (!state || !state.item || state.busy) return;
  const form = state.screen.querySelector('#review-form');
  const rating = form.querySelector('input[name="rating"]:checked');
  const body = {
    verdict,
    rating: rating ? Number(rating.value) : null,
    tags: form.querySelector('#tags').value.split(',').map((t) => t.trim()).filter(Boolean),
    corrected_output: form.querySelector('#correction').value.trim() || null,
    note: form.querySelector('#note').value.trim() || null,
  };
  setBusy(true);
  try {
    const { item } = await api('POST', `/v1/queues/${enc(state.queue)}/items/${enc(state.item.id)}/review`, body);
    state.reviewed += 1;
    state.item = null;
    toast(`${verdict === 'approve' ? 'Approved' : 'Rejected'}${item.status === 'done' ? ' — item done' : ' — waiting for another reviewer'}`);
    await nextItem();
  } catch (e) {
    if (e.code === 'lease_expired' || e.code === 'not_claimed') {
      toast('Your claim on this item ran out; here is the next one.', true);
      state.item = null;
      await nextItem();
    } else {
      toast(e.message, true);
    }
  } finally {
    if (current === state) setBusy(false);
  }
}

async function skip() {
  const state = current;
  if (!state || !state.item || state.busy) return;
  setBusy(true);
  try {
    const list = skipped(state.queue);
    list.push(state.item.id);
    sessionStorage.setItem(skipKey(state.queue), JSON.stringify(list));
    await api('POST', `/v1/queues/${enc(state.queue)}/items/${enc(state.item.id)}/release`);
    state.item = null;
    toast('Skipped');
    await nextItem();
  } catch (e) {
    toast(e.message, true);
  } finally {
    if (current === state) setBusy(false);
  }
}

document.addEventListener('keydown', (ev) => {
  if (!current || !current.item) return;
  const typing = ev.target.matches && ev.target.matches('input[type="text"], input[type="password"], textarea');
  if ((ev.ctrlKey || ev.metaKey) && ev.key === 'Enter') {
    ev.preventDefault();
    submit('approve');
    return;
  }
  if (typing) {
    if (ev.key === 'Escape') ev.target.blur();
    return;
  }
  if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const key = ev.key.toLowerCase();
  if (key === 'a') submit('approve');
  else if (key === 'r') submit('reject');
  else if (key === 's') skip();
  else if (key === 'e') current.screen.querySelector('#correction').focus();
  else if (['1', '2', '3', '4', '5'].includes(key)) current.screen.querySelector(`#rating-${key}`).checked = true;
  else return;
  ev.preventDefault();
});

window.addEventListener('pagehide', releaseHeld);

// ---------------------------------------------------------------- dashboard

function svg(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (parent) parent.append(node);
  return node;
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(Math.max(v, 1)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return v;
}

function bucketLabel(ms, bucketMs) {
  const d = new Date(ms);
  return bucketMs >= 86400000
    ? d.toLocaleDateString(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' })
    : d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
}

/**
 * A bar + line chart as inline SVG. `bars` share the left axis; `line` uses the right
 * axis as a 0–1 ratio when `ratio`, else the bars' axis.
 */
function chart({ starts, bucketMs, bars, line, ratio, label, barName, lineName }) {
  const W = 640, H = 210, L = 40, R = ratio ? 44 : 14, T = 14, B = 28;
  const pw = W - L - R, ph = H - T - B, n = starts.length, step = pw / n;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label });
  svg('title', {}, root).textContent = label;
  const top = niceMax(Math.max(1, ...bars, ...(ratio ? [] : line.filter((v) => v != null))));
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const y = T + ph - f * ph;
    svg('line', { x1: L, x2: W - R, y1: y, y2: y, class: f === 0 ? 'axis' : 'grid' }, root);
    if (f % 0.5 === 0) {
      const v = top * f;
      svg('text', { x: L - 6, y: y + 3, 'text-anchor': 'end', class: 'tick' }, root).textContent = Number.isInteger(v) ? String(v) : v.toFixed(1);
      if (ratio) svg('text', { x: W - R + 6, y: y + 3, class: 'tick' }, root).textContent = `${f * 100}%`;
    }
  }
  bars.forEach((v, i) => {
    if (!v) return;
    const bh = (v / top) * ph;
    const rect = svg('rect', { x: L + i * step + step * 0.15, y: T + ph - bh, width: Math.max(1, step * 0.7), height: bh, rx: 1.5, class: 'vol' }, root);
    svg('title', {}, rect).textContent = `${bucketLabel(starts[i], bucketMs)}: ${v} ${barName}`;
  });
  let d = '';
  let pen = false;
  line.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    const x = L + i * step + step / 2;
    const y = T + ph - (v / (ratio ? 1 : top)) * ph;
    d += `${pen ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
    const dot = svg('circle', { cx: x, cy: y, r: 2.8, class: 'dot' }, root);
    if (!ratio) dot.style.fill = '#e3a008';
    svg('title', {}, dot).textContent = `${bucketLabel(starts[i], bucketMs)}: ${ratio ? pct(v) : v} ${lineName}`;
  });
  svg('path', { d, class: ratio ? 'sat' : 'done-line' }, root);
  const every = Math.max(1, Math.ceil(n / 7));
  for (let i = 0; i < n; i += every) {
    svg('text', { x: L + i * step + step / 2, y: H - 8, 'text-anchor': 'middle', class: 'tick' }, root)
      .textContent = bucketLabel(starts[i], bucketMs);
  }
  return root;
}

function legend(items) {
  const box = h('div', null, 'legend');
  for (const [text, color] of items) {
    const item = h('span');
    const swatch = h('i');
    swatch.style.background = color;
    item.append(swatch, text);
    box.append(item);
  }
  return box;
}

function dataTable(headers, rows) {
  const details = h('details', null, 'data');
  details.append(h('summary', 'Show the numbers'));
  const table = document.createElement('table');
  const head = document.createElement('tr');
  for (const t of headers) head.append(h('th', t));
  table.append(head);
  for (const r of rows) {
    const tr = document.createElement('tr');
    for (const c of r) tr.append(h('td', c));
    table.append(tr);
  }
  details.append(table);
  return details;
}

async function renderDashboard(bucket) {
  bucket = bucket === 'day' ? 'day' : 'hour';
  const node = template('tpl-dashboard');
  for (const b of node.querySelectorAll('[data-bucket]')) {
    b.setAttribute('aria-pressed', String(b.dataset.bucket === bucket));
    b.addEventListener('click', () => { location.hash = `#/dashboard/${b.dataset.bucket}`; });
  }
  const stats = await api('GET', `/v1/stats/prompts?bucket=${bucket}`);
  const prompts = field(node, 'prompts');
  for (const p of stats.prompts) {
    const card = h('article', null, 'card chart-card');
    card.append(h('h3', p.name));
    card.append(h('p', `version ${p.version} · ${p.events} events · mean satisfaction ${pct(p.satisfaction)}`, 'sub'));
    const starts = p.buckets.map((b) => b.start);
    card.append(chart({
      starts,
      bucketMs: stats.bucket_ms,
      bars: p.buckets.map((b) => b.events),
      line: p.buckets.map((b) => b.satisfaction),
      ratio: true,
      label: `${p.name} version ${p.version}: ${p.events} events, mean satisfaction ${pct(p.satisfaction)}`,
      barName: 'events',
      lineName: 'satisfaction',
    }));
    card.append(legend([['events', '#b9c9ee'], ['mean satisfaction', '#1a7f37']]));
    card.append(dataTable(['bucket', 'events', 'satisfaction'],
      p.buckets.filter((b) => b.events).map((b) => [bucketLabel(b.start, stats.bucket_ms), b.events, pct(b.satisfaction)])));
    prompts.append(card);
  }
  if (!stats.prompts.length) prompts.append(h('p', 'No events with a prompt in this window.', 'muted'));

  const queues = field(node, 'queues');
  for (const q of stats.queues) {
    const card = h('article', null, 'card chart-card');
    card.append(h('h3', q.queue));
    card.append(h('p', `${q.reviews} reviews · ${q.completed} items completed`, 'sub'));
    card.append(chart({
      starts: q.buckets.map((b) => b.start),
      bucketMs: stats.bucket_ms,
      bars: q.buckets.map((b) => b.reviews),
      line: q.buckets.map((b) => b.completed),
      ratio: false,
      label: `${q.queue}: ${q.reviews} reviews and ${q.completed} items completed`,
      barName: 'reviews',
      lineName: 'completed',
    }));
    card.append(legend([['reviews', '#b9c9ee'], ['completed', '#e3a008']]));
    card.append(dataTable(['bucket', 'reviews', 'completed'],
      q.buckets.filter((b) => b.reviews || b.completed).map((b) => [bucketLabel(b.start, stats.bucket_ms), b.reviews, b.completed])));
    queues.append(card);
  }
  if (!stats.queues.length) queues.append(h('p', 'No reviews in this window.', 'muted'));
  show(node, 'Dashboard');
}

// ---------------------------------------------------------------- routing

function chrome(view) {
  const who = me();
  document.getElementById('nav').hidden = !who;
  document.getElementById('who').hidden = !who;
  document.getElementById('who-name').textContent = who ? who.name : '';
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === view || (view === 'review' && a.dataset.nav === 'queues')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function route() {
  releaseHeld();
  document.getElementById('toast').className = 'toast';
  current = null;
  const hash = location.hash || '#/queues';
  const [, view, arg] = hash.split('/');
  if (!me() && view !== 'signin') {
    location.hash = '#/signin';
    return;
  }
  chrome(view);
  try {
    if (view === 'signin') renderSignIn();
    else if (view === 'queues') await renderQueues();
    else if (view === 'review' && arg) await renderReview(decodeURIComponent(arg));
    else if (view === 'dashboard') await renderDashboard(arg);
    else location.hash = '#/queues';
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
}

document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
route();
