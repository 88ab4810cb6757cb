// One job's page: status, queue position, progress, curves, attempts, events, log tail, cancel and retry.

import { errorText, get, post } from './api.js';
import { lineChart, pick } from './chart.js';
import { badge, clear, el, num, when } from './dom.js';

const CANCELLABLE = new Set(['queued', 'waiting_quota', 'admitted', 'submitted', 'running', 'restarting', 'suspended',
  'cancelling']);
const RETRYABLE = new Set(['failed', 'cancelled']);
const LOG_TAIL = 200;

function facts(job) {
  const rows = [['framework', job.framework], ['model', job.model_id], ['run id', job.run_id],
    ['namespace', job.namespace], ['attempt', job.attempt], ['nodes × GPUs', `${job.num_nodes} × ${job.gpus_per_node}`],
    ['cluster object', job.cluster_object || '—'], ['created', when(job.created_at)],
    ['submitted', when(job.submitted_at)], ['started', when(job.started_at)], ['finished', when(job.finished_at)],
    ['checkpoints', job.checkpoint_prefix]];
  return el('dl', { class: 'facts' }, rows.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v ?? '—')]));
}

// The `queue` object of a waiting job, whatever fields it carries (position first).
function queueBox(job) {
  const queue = job.queue;
  if (!queue || typeof queue !== 'object') return null;
  const entries = Object.entries(queue).filter(([k]) => k !== 'position');
  return el('div', { id: 'queue', class: 'queue' },
    el('strong', {}, queue.position !== undefined ? `Queue position ${queue.position}` : 'In the queue'),
    entries.length ? el('span', { class: 'muted' }, ' · ',
      entries.map(([k, v]) => `${k.replaceAll('_', ' ')}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · '))
      : null);
}

function progressBox(progress) {
  if (!progress) return el('p', { id: 'progress', class: 'muted' }, 'No progress reported yet.');
  const p = progress.progress;
  const total = p.total_steps || 0;
  const pct = total ? Math.min(100, (100 * p.step) / total) : 0;
  const fill = el('div', { class: 'fill' });
  fill.style.width = `${pct.toFixed(1)}%`; // through the CSSOM: the page's CSP allows no inline style attribute
  return el('div', { id: 'progress', class: 'progress', dataset: { step: p.step, total: total } },
    el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': total || 1,
      'aria-valuenow': p.step }, fill),
    el('span', {}, `step ${p.step}${total ? ` / ${total} (${pct.toFixed(0)}%)` : ''}`,
      p.loss !== null && p.loss !== undefined ? ` · loss ${num(p.loss)}` : '', p.state ? ` · ${p.state}` : '',
      p.updated_at ? ` · ${when(p.updated_at)}` : ''));
}

function charts(metrics) {
  const box = el('div', { id: 'charts', class: 'charts' });
  if (!metrics) return box.append(el('p', { class: 'muted' }, 'No metrics logged yet.')), box;
  const pts = metrics.points;
  box.append(lineChart({ title: 'loss', series: [
    { name: 'loss', label: 'train loss', points: pick(pts, 'loss') },
    { name: 'eval_loss', label: 'eval loss', points: pick(pts, 'eval_loss'), markers: true },
  ] }));
  box.append(lineChart({ title: 'learning rate', width: 380, height: 180,
    series: [{ name: 'lr', label: 'lr', points: pick(pts, 'lr') }] }));
  box.append(lineChart({ title: 'tokens/s', width: 380, height: 180,
    series: [{ name: 'tokens_per_s', label: 'tokens/s', points: pick(pts, 'tokens_per_s') }] }));
  const note = `${pts.length} points` + (metrics.downsampled ? ` (${metrics.total_points} logged, averaged)` : '')
    + (metrics.complete ? '' : ' · sampled from a long file');
  box.append(el('p', { id: 'metrics-note', class: 'muted', dataset: { points: pts.length } }, note));
  return box;
}

// Attempts from the events: each starts where its attempt number is first seen and ends with its last state.
function attempts(events) {
  const byAttempt = new Map();
  for (const e of events) {
    const a = byAttempt.get(e.attempt) || { attempt: e.attempt, from: e.at, last: e };
    a.last = e;
    byAttempt.set(e.attempt, a);
  }
  return el('table', { id: 'attempts', class: 'small' },
    el('thead', {}, el('tr', {}, ['attempt', 'since', 'now', 'last change'].map((h) => el('th', {}, h)))),
    el('tbody', {}, [...byAttempt.values()].map((a) => el('tr', {},
      el('td', { class: 'num' }, a.attempt), el('td', {}, when(a.from)), el('td', {}, badge(a.last.to)),
      el('td', {}, `${when(a.last.at)} · ${a.last.reason || ''}`)))));
}

function eventTable(events) {
  return el('table', { id: 'events', class: 'small' },
    el('thead', {}, el('tr', {}, ['at', 'from', 'to', 'attempt', 'reason'].map((h) => el('th', {}, h)))),
    el('tbody', {}, events.slice().reverse().map((e) => el('tr', {},
      el('td', {}, when(e.at)), el('td', {}, e.from || '—'), el('td', {}, badge(e.to)),
      el('td', { class: 'num' }, e.attempt), el('td', {}, e.reason || '')))));
}

function logBox(logs) {
  if (!logs) return el('p', { id: 'log', class: 'muted' }, 'No logs yet.');
  return el('div', { id: 'log' }, logs.logs.map((entry) => [
    el('h4', {}, `${entry.file} (${logs.source})`), el('pre', { class: 'log' }, entry.text)]));
}

const optional = (answer) => (answer.ok ? answer.body : null);

export async function jobPage(main, name, keepFresh) {
  const path = `train/${encodeURIComponent(name)}`;
  const header = el('div', { class: 'job-head' });
  const result = el('p', { id: 'action-result', class: 'result', role: 'status' });
  const sections = {
    facts: el('div'), queue: el('div'), progress: el('div'), charts: el('div'), attempts: el('div'),
    events: el('div'), log: el('div'),
  };
  const act = async (verb) => {
    const answer = await post(`${path}/${verb}`);
    result.className = answer.ok ? 'result ok' : 'result bad';
    result.textContent = answer.ok
      ? `${verb}: ${answer.status} — the job is now ${answer.body.status}` : `${verb}: ${errorText(answer)}`;
    await refresh();
  };
  const cancel = el('button', { type: 'button', id: 'cancel', class: 'danger', onclick: () => act('cancel') }, 'Cancel');
  const retry = el('button', { type: 'button', id: 'retry', onclick: () => act('retry') }, 'Retry');
  clear(main).append(
    el('p', {}, el('a', { href: '#/' }, '← all jobs')),
    el('section', { class: 'panel' }, header, el('div', { class: 'actions' }, cancel, retry), result,
      sections.queue, sections.progress, sections.facts),
    el('section', { class: 'panel' }, el('h3', {}, 'Curves'), sections.charts),
    el('section', { class: 'panel two' }, el('div', {}, el('h3', {}, 'Attempts'), sections.attempts),
      el('div', {}, el('h3', {}, 'Events'), sections.events)),
    el('section', { class: 'panel' }, el('h3', {}, `Log (last ${LOG_TAIL} lines)`), sections.log));

  const refresh = async () => {
    const job = await get(path);
    if (!job.ok) {
      clear(header).append(el('h2', {}, name), el('p', { class: 'error' }, errorText(job)));
      return;
    }
    const [events, progress, metrics, logs] = await Promise.all([
      get(`${path}/events`), get(`${path}/progress`), get(`${path}/metrics`), get(`${path}/logs`, { tail: LOG_TAIL }),
    ]);
    const j = job.body;
    clear(header).append(el('h2', { id: 'job-name' }, j.name, ' ', badge(j.status)),
      j.detail ? el('p', { class: 'detail' }, j.detail) : null);
    cancel.disabled = !CANCELLABLE.has(j.status);
    retry.disabled = !RETRYABLE.has(j.status);
    clear(sections.facts).append(facts(j));
    clear(sections.queue).append(queueBox(j) || '');
    clear(sections.progress).append(progressBox(optional(progress)));
    clear(sections.charts).append(charts(optional(metrics)));
    const history = optional(events)?.events || [];
    clear(sections.attempts).append(attempts(history));
    clear(sections.events).append(eventTable(history));
    clear(sections.log).append(logBox(optional(logs)));
    sections.log.querySelectorAll('pre').forEach((pre) => { pre.scrollTop = pre.scrollHeight; }); // the tail
  };
  await keepFresh(refresh);
}
