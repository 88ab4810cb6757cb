// The API, called from the page with the token the user signed in with (kept in this tab's sessionStorage).

const TOKEN_KEY = 'trainer-api-token';
export const HEADER = 'X-TRAINER-TOKEN';
// The API serves the dashboard at <base>/ui/: its routes are relative to <base>/.
const BASE = new URL('..', window.location.href);

export const token = {
  get: () => window.sessionStorage.getItem(TOKEN_KEY),
  set: (value) => window.sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => window.sessionStorage.removeItem(TOKEN_KEY),
};

export class Unauthorized extends Error {}

// Resolves to {status, ok, body}; a 401/403 rejects with Unauthorized (the page goes back to its login).
export async function call(method, path, { params, withToken } = {}) {
  const url = new URL(path, BASE);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const secret = withToken ?? token.get();
  const headers = { Accept: 'application/json' };
  if (secret) headers[HEADER] = secret;
  let response;
  try {
    response = await fetch(url, { method, headers, cache: 'no-store', credentials: 'omit' });
  } catch (err) {
    return { status: 0, ok: false, body: { error: { code: 'unreachable', message: `the API did not answer: ${err.message}` } } };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { error: { code: 'not_json', message: `${response.status} ${response.statusText}` } };
  }
  if ((response.status === 401 || response.status === 403) && !withToken) {
    throw new Unauthorized(errorText({ status: response.status, body }));
  }
  return { status: response.status, ok: response.ok, body };
}

export const get = (path, params) => call('GET', path, { params });
export const post = (path) => call('POST', path);

export function errorText({ status, body }) {
  const error = (body && body.error) || {};
  let text = `${status || 'no answer'} ${error.code || ''}: ${error.message || ''}`.trim();
  if (error.fields) {
    text += ` (${Object.entries(error.fields).map(([k, v]) => `${k}: ${[].concat(v).join(', ')}`).join('; ')})`;
  }
  return text;
}
