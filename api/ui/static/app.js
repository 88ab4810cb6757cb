// The dashboard: a login form, the job list (#/) and a job's page (#/jobs/<name>). No framework, no build step.

import { Unauthorized, call, errorText, get, token } from './api.js';
import { badge, clear, el, when } from './dom.js';
import { jobPage } from './job.js';

const REFRESH_MS = 3000;
const PAGE_SIZE = 50;
const main = () => document.getElementById('main');
const state = { timer: null, view: null, loop: 0, statuses: null, filter: '' };

function setRefreshed(text) {
  document.getElementById('refreshed').textContent = text;
}

function live() {
  return document.getElementById('live').checked;
}

function stopRefresh() {
  if (state.timer) window.clearTimeout(state.timer);
  state.timer = null;
}

// Run `refresh` now and, while "live" is on, again every REFRESH_MS; a 401/403 anywhere signs out.
// Each call starts a new loop; an older loop whose refresh was still in flight stops instead of re-arming.
function keepFresh(view, refresh) {
  stopRefresh();
  state.view = view;
  const loop = ++state.loop;
  const tick = async () => {
    try {
      await refresh();
      setRefreshed(`updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      if (err instanceof Unauthorized) return signOut(`The API refused the token: ${err.message}`);
      setRefreshed(`refresh failed: ${err.message}`);
    }
    if (state.loop === loop && state.view === view && live()) state.timer = window.setTimeout(tick, REFRESH_MS);
  };
  return tick();
}

// --- sign in ------------------------------------------------------------------------------------------------

function showLogin(message) {
  stopRefresh();
  state.view = 'login';
  document.getElementById('nav').hidden = true;
  const error = el('p', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
  const input = el('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password',
    required: true, placeholder: 'X-TRAINER-TOKEN' });
  const form = el('form', { id: 'login', class: 'panel login', onsubmit: async (event) => {
    event.preventDefault();
    const candidate = input.value.trim();
    if (!candidate) return;
    const answer = await call('GET', 'train', { params: { limit: 1 }, withToken: candidate });
    if (answer.ok) {
      token.set(candidate);
      route();
    } else {
      error.textContent = `Sign-in refused: ${errorText(answer)}`;
    }
  } },
  el('h2', {}, 'Sign in'),
  el('p', { class: 'muted' }, 'The API token (one of TRAINER_API_TOKEN). It stays in this tab only.'),
  el('label', { for: 'token' }, 'Token'), input,
  el('button', { type: 'submit' }, 'Sign in'), error);
  clear(main()).append(form);
  input.focus();
}

function signOut(message) {
  token.clear();
  showLogin(message);
}

// --- job list ------------------------------------------------------------------------------------------------

async function statuses() {
  if (!state.statuses) {
    const spec = await get('openapi.json');
    state.statuses = spec.ok ? spec.body.components.schemas.TrainingJobStatus.properties.status.enum : [];
  }
  return state.statuses;
}

function jobRow(job) {
  const link = el('a', { href: `#/jobs/${encodeURIComponent(job.name)}` }, job.name);
  return el('tr', { dataset: { name: job.name, status: job.status } },
    el('td', {}, link), el('td', {}, badge(job.status)), el('td', {}, job.framework),
    el('td', {}, job.model_id), el('td', {}, `${job.num_nodes} × ${job.gpus_per_node}`),
    el('td', { class: 'num' }, job.attempt), el('td', {}, when(job.updated_at)),
    el('td', { class: 'detail' }, job.detail || ''));
}

async function listPage() {
  const filters = el('div', { class: 'filters', role: 'group', 'aria-label': 'status filter' });
  const body = el('tbody', { id: 'job-rows' });
  const more = el('button', { type: 'button', id: 'more', class: 'quiet', hidden: true }, 'Load more');
  const note = el('p', { id: 'list-note', class: 'muted' });
  // aria-busy stays true until the rows for the current filter are drawn (screen readers and tests wait on it).
  const table = el('table', { id: 'jobs', class: 'jobs', 'aria-busy': 'true', dataset: { filter: state.filter || 'all' } },
    el('thead', {}, el('tr', {}, ['name', 'status', 'framework', 'model', 'nodes × GPUs', 'attempt', 'updated',
      'detail'].map((h) => el('th', {}, h)))), body);
  clear(main()).append(el('section', { class: 'panel' }, el('h2', {}, 'Jobs'), filters, table, note, more));

  const drawFilters = (names) => {
    clear(filters);
    for (const name of ['', ...names]) {
      filters.append(el('button', { type: 'button', class: name === state.filter ? 'chip on' : 'chip',
        dataset: { filter: name || 'all' }, 'aria-pressed': String(name === state.filter),
        onclick: () => { state.filter = name; listPage(); } }, name || 'all'));
    }
  };
  drawFilters(await statuses());

  let cursor = null;
  let extra = [];
  more.onclick = async () => {
    const page = await get('train', { status: state.filter, limit: PAGE_SIZE, cursor });
    if (!page.ok) return void (note.textContent = errorText(page));
    extra = extra.concat(page.body.jobs);
    page.body.jobs.forEach((job) => body.append(jobRow(job)));
    cursor = page.body.next_cursor;
    more.hidden = !cursor;
  };
  await keepFresh('list', async () => {
    const page = await get('train', { status: state.filter, limit: PAGE_SIZE });
    if (!page.ok) {
      note.textContent = errorText(page);
      return;
    }
    if (extra.length) return; // the user paged on: do not pull the rows they are reading from under them
    clear(body);
    page.body.jobs.forEach((job) => body.append(jobRow(job)));
    note.textContent = page.body.jobs.length ? '' : `No ${state.filter || ''} jobs.`.replace('  ', ' ');
    cursor = page.body.next_cursor;
    more.hidden = !cursor;
    table.setAttribute('aria-busy', 'false');
  });
}

// --- routing -------------------------------------------------------------------------------------------------

async function route() {
  if (!token.get()) return showLogin();
  document.getElementById('nav').hidden = false;
  const match = window.location.hash.match(/^#\/jobs\/(.+)$/);
  try {
    if (match) {
      const name = decodeURIComponent(match[1]);
      await jobPage(main(), name, (refresh) => keepFresh(`job:${name}`, refresh));
    } else {
      await listPage();
    }
  } catch (err) {
    if (err instanceof Unauthorized) return signOut(`The API refused the token: ${err.message}`);
    throw err;
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  document.getElementById('logout').addEventListener('click', () => signOut('Signed out.'));
  document.getElementById('live').addEventListener('change', () => { if (live()) route(); else stopRefresh(); });
  route();
});
