// The search box and the shopper panel: a query, a profile text and a
// history picked from the catalog go to POST /recommend with
// `"explain": true`; the ranked items come back with their scores and the
// reasons that raised them, each item's title read from the catalog.

import { ApiError, catalogItem, catalogPage, recommend } from './api.js';
import { byId, clearError, el, fill, num, price, showError } from './dom.js';
import { addToHistory, showItem } from './item.js';

/** The shopper's history, most recent first: catalog items `{id, text}`. */
const history = [];

function renderHistory() {
  const list = byId('history');
  fill(
    list,
    history.map((item, index) =>
      el(
        'li',
        { title: item.id },
        el('span', {}, item.text),
        el('button', { type: 'button', 'aria-label': `remove ${item.text}`, onclick: () => { history.splice(index, 1); renderHistory(); } }, '×'),
      ),
    ),
  );
  if (history.length === 0) list.append(el('li', { class: 'empty' }, el('span', {}, 'none')));
}

function add(item) {
  const at = history.findIndex((held) => held.id === item.id);
  if (at >= 0) history.splice(at, 1);
  history.unshift(item);
  renderHistory();
}

/** The catalog's first page, as suggestions for the history field. */
async function loadSuggestions() {
  try {
    const page = await catalogPage(null, 200);
    fill(byId('catalog-ids'), page.items.map((item) => el('option', { value: item.id }, item.text)));
  } catch {
    // Suggestions only: the field still takes any id.
  }
}

/** Adds the item whose id (or suggested id) is in the pick field. */
async function pick() {
  const field = byId('history-pick');
  const id = field.value.trim();
  if (!id) return;
  const error = byId('search-error');
  clearError(error);
  try {
    const item = await catalogItem(id);
    add({ id: item.id, text: item.text });
    field.value = '';
  } catch (failure) {
    showError(error, failure);
  }
}

function request() {
  const user = {};
  const query = byId('q').value.trim();
  const profile = byId('profile').value.trim();
  if (query) user.query = query;
  if (profile) user.text = profile;
  if (history.length) user.history = history.map(({ id, text }) => ({ id, text }));
  const topK = Number(byId('top-k').value);
  return {
    user,
    top_k: Number.isFinite(topK) && topK > 0 ? topK : 10,
    explain: true,
    filters: { available: byId('available-only').checked },
  };
}

function reasonLine(reason) {
  return el(
    'li',
    { class: 'reason' },
    el('span', { class: `kind ${reason.kind}` }, reason.kind.replaceAll('_', ' ')),
    el('span', { class: 'text' }, reason.text),
    el('span', { class: 'contribution', title: 'change in purchase probability (Shapley value)' }, `+${num(reason.contribution * 100, 1)} pts`),
  );
}

/**
 * One ranked item. `best` is the answer's highest score: calibrated purchase
 * probabilities are small (a few percent), so the bar shows the score
 * against the best of this answer, and the figure the probability itself.
 */
function resultCard(item, stored, best) {
  const title = stored ? stored.text : item.id;
  const explanation = item.explanation || { reasons: [], baseline: null, unlisted: null };
  const bar = el('span');
  const share = best > 0 ? item.score / best : 0;
  bar.style.width = `${Math.max(0, Math.min(1, share)) * 100}%`;
  return el(
    'li',
    { class: 'result' },
    el('div', { class: 'rank' }, item.rank),
    el(
      'div',
      {},
      el('button', { type: 'button', class: 'link title', onclick: () => showItem(item.id) }, title),
      el(
        'div',
        { class: 'sub' },
        el('code', {}, item.id),
        stored ? ` · ${price(stored.price)}` : ' · not in the catalog',
        stored && !stored.available ? ' · unavailable' : null,
      ),
      el('ul', { class: 'reasons' }, explanation.reasons.map(reasonLine)),
      explanation.reasons.length === 0 ? el('div', { class: 'explain-sum' }, 'no reason stands out') : null,
      el(
        'div',
        { class: 'explain-sum' },
        `baseline ${num(explanation.baseline)} + reasons + unlisted ${num(explanation.unlisted)} = score`,
      ),
    ),
    el(
      'div',
      { class: 'score' },
      el('div', { class: 'value', title: 'predicted purchase probability' }, `${num(item.score * 100, 2)}%`),
      el('div', { class: 'bar', title: 'against the best score of this answer' }, bar),
      el('div', { class: 'row' }, el('button', { type: 'button', class: 'small', onclick: () => stored && addToHistory(stored), disabled: !stored }, '+ history')),
    ),
  );
}

/** Each item's stored copy, or null where the catalog no longer holds it. */
function storedItems(ids) {
  return Promise.all(
    ids.map((id) =>
      catalogItem(id).catch((failure) => {
        if (failure instanceof ApiError && failure.status === 404) return null;
        throw failure;
      }),
    ),
  );
}

async function rank(event) {
  event.preventDefault();
  const error = byId('search-error');
  const meta = byId('search-meta');
  const results = byId('results');
  clearError(error);
  const button = byId('rank');
  button.disabled = true;
  fill(meta, 'ranking…');
  try {
    const answer = await recommend(request());
    const stored = await storedItems(answer.items.map((item) => item.id));
    const best = Math.max(0, ...answer.items.map((item) => item.score));
    fill(results, answer.items.map((item, i) => resultCard(item, stored[i], best)));
    fill(
      meta,
      el('b', {}, `${answer.items.length} items`),
      ` in ${num(answer.took_ms, 1)} ms · variant `,
      el('code', {}, answer.variant),
      ' · bundle ',
      el('code', {}, answer.model.head),
      ' · request ',
      el('code', {}, answer.request_id),
      answer.corrected_query ? el('div', { class: 'notice' }, `Showing results for “${answer.corrected_query}”`) : null,
      answer.degraded
        ? el('div', { class: 'notice', id: 'degraded' }, `Degraded answer (${answer.degraded_reason}): ranked without the encoder`)
        : null,
    );
  } catch (failure) {
    fill(results);
    fill(meta);
    showError(error, failure);
  } finally {
    button.disabled = false;
  }
}

export function initSearch() {
  renderHistory();
  byId('search-form').addEventListener('submit', rank);
  byId('history-add').addEventListener('click', pick);
  byId('history-pick').addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      pick();
    }
  });
  document.addEventListener('shopper:history-add', (event) => add(event.detail));
  loadSuggestions();
}
