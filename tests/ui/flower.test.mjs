// Flower in a real browser: HTTP basic auth from FLOWER_BASIC_AUTH, then the workers page with the running worker
// (the pytest side, tests/ui/test_flower.py, starts Redis, the worker and Flower).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { env, launch, openPage } from './browser.mjs';

const WORKERS = new URL('/workers', env('FLOWER_URL')).href;
const USER = env('FLOWER_USER');
const PASSWORD = env('FLOWER_PASSWORD');
const WORKER = env('WORKER');
const SHOTS = process.env.SHOTS || '';
let browser;

before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

// The page's HTML once it has settled: after a refused navigation Chromium moves to its own error page, and
// `page.content()` throws while that navigation is under way.
async function settledContent(page) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await page.content();
    } catch (error) {
      if (attempt >= 50 || !/navigating/.test(String(error))) throw error;
      await page.waitForLoadState('load').catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

async function refused(httpCredentials) {
  const { page, context } = await openPage(browser, httpCredentials ? { httpCredentials } : {});
  if (httpCredentials) {
    const response = await page.goto(WORKERS);
    assert.equal(response.status(), 401);
  } else {
    // No credentials to offer: headless Chromium gives up on the challenge instead of showing a dialog.
    await assert.rejects(page.goto(WORKERS), /ERR_INVALID_AUTH_CREDENTIALS/);
    assert.equal((await context.request.get(WORKERS)).status(), 401);
  }
  assert.ok(!(await settledContent(page)).includes(WORKER), 'the worker is shown without the right credentials');
  await context.close();
}

test('flower without credentials answers 401 and shows no worker', async () => {
  await refused(null);
});

test('flower refuses a wrong password and a wrong user', async () => {
  await refused({ username: USER, password: `${PASSWORD}-wrong` });
  await refused({ username: `${USER}x`, password: PASSWORD });
});

test('flower with the right credentials shows the running worker on its workers page', async () => {
  const { page, context, errors } = await openPage(browser, { httpCredentials: { username: USER, password: PASSWORD } });
  const response = await page.goto(WORKERS);
  assert.equal(response.status(), 200);
  assert.match(await page.title(), /Flower/);
  // Flower learns of workers from their events (heartbeats every 2 s) and refreshes its table by itself.
  const row = page.locator('#workers-table tbody tr', { has: page.locator(`a[title="${WORKER}"]`) });
  await row.waitFor({ timeout: 60_000 });
  assert.equal((await row.locator('td').first().textContent()).trim(), WORKER);
  assert.equal((await row.locator('td').nth(1).textContent()).trim(), 'Online');
  await row.locator('a.worker-name-link').click();
  await page.waitForURL(`**/worker/${encodeURIComponent(WORKER)}`);
  assert.ok((await page.textContent('body')).includes(WORKER));
  await page.goBack();
  await row.waitFor({ timeout: 60_000 });
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/flower-workers.png`, fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
});
