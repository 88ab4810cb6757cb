// Headless Debian Chromium through playwright-core (pinned in package.json): nothing is downloaded.
import { chromium } from 'playwright-core';

export const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

export async function launch() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS });
}

// A page that records every request it makes and fails the test on any script error.
export async function openPage(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  const page = await context.newPage();
  const requests = [];
  const errors = [];
  page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  page.on('pageerror', (e) => errors.push(String(e)));
  // Chromium logs every 4xx answer ("Failed to load resource"): those are the API's answers, not page errors.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  return { context, page, requests, errors };
}

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run the browser tests through pytest: tests/ui/)`);
  return value;
}

// The API, called directly from node (to compare what the page shows with what the API answers).
export async function api(path, { method = 'GET', token = env('DASH_TOKEN'), body } = {}) {
  const headers = { 'X-TRAINER-TOKEN': token };
  if (body) headers['Content-Type'] = 'application/json';
  const response = await fetch(new URL(path, env('DASH_URL')), { method, headers, body });
  return { status: response.status, body: await response.json() };
}
