// The console's only way to the server: one function per documented route
// (see /openapi.json). Every request is a fetch call with a literal path, so a
// test can read them all from this source and check each against the
// document. Errors come back as ApiError, carrying the API's own
// `{"error": ..., "kind": ...}` body for the page to show.

/** An answer other than 2xx, or no answer at all. */
export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }

  /** One line for people: `422 invalid_top_k: top_k must be ...`. */
  describe() {
    const head = this.status ? `${this.status} ${this.kind}` : this.kind;
    return `${head}: ${this.message}`;
  }
}

const JSON_HEADERS = { 'Content-Type': 'application/json' };

function adminHeaders(token) {
  return { ...JSON_HEADERS, Authorization: `Bearer ${token}` };
}

/** Awaits the request; the JSON body of a 2xx, else an ApiError. */
async function answer(request, as = 'json') {
  let response;
  try {
    response = await request;
  } catch (error) {
    throw new ApiError(0, 'network', `the server did not answer (${error.message})`);
  }
  const text = await response.text();
  if (!response.ok) {
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      // Not the API's error body: show the status alone.
    }
    const kind = body && typeof body.kind === 'string' ? body.kind : 'error';
    const message = body && typeof body.error === 'string' ? body.error : response.statusText || 'no details';
    throw new ApiError(response.status, kind, message);
  }
  if (as === 'text') return text;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, 'bad_answer', 'the answer is not JSON');
  }
}

/** POST /recommend. */
export function recommend(request) {
  return answer(fetch('/recommend', { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(request) }));
}

/** GET /v1/catalog/items: a page of the catalog, in id order. */
export function catalogPage(after, limit) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (after) query.set('after', after);
  return answer(fetch(`/v1/catalog/items?${query}`));
}

/** GET /v1/catalog/items/{id}. */
export function catalogItem(id) {
  return answer(fetch(`/v1/catalog/items/${encodeURIComponent(id)}`));
}

/** GET /ready. */
export function ready() {
  return answer(fetch('/ready'));
}

/** GET /v1/model: the bundle, its training record, the variants. */
export function model() {
  return answer(fetch('/v1/model'));
}

/** GET /metrics, as Prometheus text. */
export function metrics() {
  return answer(fetch('/metrics'), 'text');
}

/** POST /admin/reload, of `version` or (empty) what CURRENT names. */
export function reload(token, version) {
  const body = version ? { version } : {};
  return answer(fetch('/admin/reload', { method: 'POST', headers: adminHeaders(token), body: JSON.stringify(body) }));
}

/** POST /admin/rollback. */
export function rollback(token) {
  return answer(fetch('/admin/rollback', { method: 'POST', headers: adminHeaders(token) }));
}
