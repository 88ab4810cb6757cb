// The jobs dashboard in a real browser, against the live API the pytest fixture started (tests/ui/test_dashboard.py).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, env, launch, openPage } from './browser.mjs';

const URL_UI = new URL('/ui/', env('DASH_URL')).href;
const TOKEN = env('DASH_TOKEN');
const SHOTS = process.env.SHOTS || '';
let browser;

before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function signIn(page, token = TOKEN) {
  await page.goto(URL_UI);
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

const apiCalls = (requests) => requests.filter((r) => !new URL(r.url).pathname.startsWith('/ui/'));

test('without a token the dashboard shows a login and no data', async () => {
  const { page, requests, errors, context } = await openPage(browser);
  await page.goto(URL_UI);
  await page.waitForSelector('#login');
  assert.equal(await page.isVisible('#token'), true);
  assert.equal(await page.isVisible('#nav'), false);
  assert.equal(await page.$('#jobs'), null);
  const text = await page.textContent('body');
  for (const name of env('JOBS').split(',')) assert.ok(!text.includes(name), `${name} is shown without a token`);
  assert.deepEqual(apiCalls(requests), [], 'the page called the API without a token');
  await shot(page, 'dashboard-login');

  await signIn(page, 'not-the-token');
  await page.waitForSelector('#login-error:not(:empty)');
  assert.match(await page.textContent('#login-error'), /403 forbidden/);
  assert.equal(await page.$('#jobs'), null);
  assert.equal(await page.evaluate(() => window.sessionStorage.length), 0);
  // The API itself refuses the dashboard's data routes without the token.
  assert.equal((await api('/train', { token: '' })).status, 401);
  assert.deepEqual(errors, []);
  await context.close();
});

test('with a token it lists the jobs of the live API, filters them and refreshes live', async () => {
  const { page, requests, errors, context } = await openPage(browser);
  await signIn(page);
  await page.waitForSelector('#jobs tbody tr');
  assert.equal(await page.evaluate(() => window.sessionStorage.getItem('trainer-api-token')), TOKEN);
  const listed = await page.$$eval('#jobs tbody tr', (rows) => rows.map((r) => [r.dataset.name, r.dataset.status]));
  const fromApi = (await api('/train?limit=50')).body.jobs.map((j) => [j.name, j.status]);
  assert.deepEqual(listed, fromApi);
  assert.ok(listed.length >= 3);
  for (const r of apiCalls(requests)) assert.equal(r.headers['x-trainer-token'], TOKEN, r.url);
  await shot(page, 'dashboard-jobs');

  await page.click('button[data-filter=running]');
  // The table is redrawn for the filter: wait until its rows are drawn (an empty, still-loading table would pass
  // an "every row is running" check vacuously).
  await page.waitForSelector('#jobs[data-filter=running][aria-busy=false]');
  assert.equal(await page.getAttribute('button[data-filter=running]', 'aria-pressed'), 'true');
  const running = await page.$$eval('#jobs tbody tr', (rows) => rows.map((r) => r.dataset.name));
  assert.deepEqual(running, (await api('/train?status=running')).body.jobs.map((j) => j.name));
  assert.ok(running.length >= 1);

  await page.click('button[data-filter=all]');
  await page.waitForSelector('button[data-filter=all][aria-pressed=true]');
  const late = await api('/train', { method: 'POST', body: env('LATE_BODY') }); // submitted while the page is open
  assert.equal(late.status, 202);
  await page.waitForSelector(`#jobs tr[data-name="${late.body.name}"]`, { timeout: 15000 }); // live refresh
  assert.deepEqual(errors, []);
  await context.close();
});

test('a job page draws the curves with as many points as the metrics series has', async () => {
  const { page, errors, context } = await openPage(browser);
  const name = env('JOB');
  await signIn(page);
  await page.waitForSelector('#jobs tbody tr');
  await page.click(`#jobs tr[data-name="${name}"] a`);
  await page.waitForSelector('svg[data-chart=loss] polyline[data-series=loss]');
  const series = (await api(`/train/${name}/metrics`)).body;
  const withLoss = series.points.filter((p) => p.loss !== null).length;
  const withEval = series.points.filter((p) => p.eval_loss !== null).length;
  assert.ok(withLoss > 1 && withEval > 1);
  const vertices = await page.$eval('svg[data-chart=loss] polyline[data-series=loss]',
    (line) => line.getAttribute('points').trim().split(/\s+/).length);
  assert.equal(vertices, withLoss);
  const evalDots = await page.$$eval('svg[data-chart=loss] g[data-series=eval_loss] circle', (dots) => dots.length);
  assert.equal(evalDots, withEval);
  // Higher loss is drawn higher up: the first point (largest loss) has the smallest y.
  const ys = await page.$eval('svg[data-chart=loss] polyline[data-series=loss]',
    (line) => line.getAttribute('points').trim().split(/\s+/).map((xy) => Number(xy.split(',')[1])));
  assert.ok(ys[0] < ys[ys.length - 1]);
  assert.equal(await page.textContent('#metrics-note').then((t) => t.startsWith(`${series.points.length} points`)), true);

  const progress = (await api(`/train/${name}/progress`)).body.progress;
  assert.equal(await page.getAttribute('#progress', 'data-step'), String(progress.step));
  assert.match(await page.textContent('#progress'), new RegExp(`step ${progress.step} / ${progress.total_steps}`));
  assert.match(await page.textContent('#log'), /the last line of the log/);
  const events = (await api(`/train/${name}/events`)).body.events;
  assert.equal(await page.$$eval('#events tbody tr', (rows) => rows.length), events.length);
  assert.equal(await page.$$eval('#attempts tbody tr', (rows) => rows.length), 1);
  await shot(page, 'dashboard-job');
  assert.deepEqual(errors, []);
  await context.close();
});

test('a downsampled series is drawn with every point the API answered', async () => {
  const { page, context } = await openPage(browser);
  const name = env('LONG_JOB');
  await signIn(page);
  await page.goto(`${URL_UI}#/jobs/${encodeURIComponent(name)}`);
  await page.waitForSelector('svg[data-chart=loss] polyline[data-series=loss]');
  const series = (await api(`/train/${name}/metrics`)).body;
  assert.equal(series.downsampled, true);
  const vertices = await page.$eval('svg[data-chart=loss] polyline[data-series=loss]',
    (line) => line.getAttribute('points').trim().split(/\s+/).length);
  assert.equal(vertices, series.points.length);
  await context.close();
});

test('cancel and retry from the page move the job and show the API answer', async () => {
  const { page, errors, context } = await openPage(browser);
  const name = env('CANCEL_JOB');
  await signIn(page);
  await page.goto(`${URL_UI}#/jobs/${encodeURIComponent(name)}`);
  await page.waitForSelector('#job-name .badge[data-status=queued]');
  assert.equal(await page.isDisabled('#retry'), true);
  await page.click('#cancel');
  await page.waitForSelector('#action-result.ok');
  assert.equal(await page.textContent('#action-result'), 'cancel: 200 — the job is now cancelled');
  assert.equal((await api(`/train/${name}`)).body.status, 'cancelled');
  await page.waitForSelector('#job-name .badge[data-status=cancelled]');
  assert.equal(await page.isDisabled('#cancel'), true);

  await page.click('#retry');
  await page.waitForFunction(() => document.querySelector('#action-result').textContent.startsWith('retry:'));
  assert.equal(await page.textContent('#action-result'), 'retry: 202 — the job is now queued');
  const job = (await api(`/train/${name}`)).body;
  assert.equal(job.status, 'queued');
  assert.equal(job.attempt, 2);
  await page.waitForFunction(() => document.querySelectorAll('#attempts tbody tr').length === 2);
  await shot(page, 'dashboard-retried');

  // A refused action shows the API's error: cancel twice from two tabs.
  const other = await context.newPage();
  await signIn(other); // sessionStorage is per tab: a new tab signs in again
  await other.waitForSelector('#jobs');
  await other.goto(`${URL_UI}#/jobs/${encodeURIComponent(name)}`);
  await other.waitForSelector('#job-name .badge[data-status=queued]');
  await other.uncheck('#live'); // this tab keeps showing `queued` while the first one cancels
  await page.click('#cancel');
  await page.waitForSelector('#job-name .badge[data-status=cancelled]');
  await other.evaluate(() => { document.getElementById('cancel').disabled = false; });
  await other.click('#cancel');
  await other.waitForSelector('#action-result.bad');
  assert.match(await other.textContent('#action-result'), /^cancel: 409 invalid_state: .*already cancelled/);
  assert.deepEqual(errors, []);
  await context.close();
});
