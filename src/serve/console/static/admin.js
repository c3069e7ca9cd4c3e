// Reload and rollback (POST /admin/reload, POST /admin/rollback), behind
// the admin token. The token lives in one variable of this module and
// nowhere else: not in web storage or a cookie, and the
// field is emptied once it is read. Reloading the page forgets it.

import { reload, rollback } from './api.js';
import { byId, clearError, el, fill, showError } from './dom.js';

let token = null;

function setToken(value) {
  token = value || null;
  byId('reload').disabled = !token;
  byId('rollback').disabled = !token;
  fill(byId('token-state'), token ? 'Token held in this page’s memory only.' : 'No token: reload and rollback are locked.');
}

async function act(what, call, onChange) {
  const error = byId('admin-error');
  const result = byId('admin-result');
  clearError(error);
  fill(result, `${what}…`);
  try {
    const answer = await call();
    const outcome = answer.outcome === 'unchanged' ? 'unchanged: ' : 'installed: ';
    fill(result, el('div', { class: 'success' }, `${what} — ${outcome}`, el('code', {}, answer.from || '—'), ' → ', el('code', {}, answer.to || '—')));
    onChange();
  } catch (failure) {
    fill(result);
    showError(error, failure);
  }
}

/** `onChange` runs after a bundle change, to refresh what shows the model. */
export function initAdmin(onChange) {
  byId('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const field = byId('token');
    setToken(field.value.trim());
    field.value = '';
  });
  byId('token-forget').addEventListener('click', () => setToken(null));
  byId('reload').addEventListener('click', () => act('Reload', () => reload(token, byId('reload-version').value.trim()), onChange));
  byId('rollback').addEventListener('click', () => act('Rollback', () => rollback(token), onChange));
  setToken(null);
}
