// The catalog: browse it a page at a time in id order
// (GET /v1/catalog/items), or search it (POST /recommend with the query
// alone, unavailable items included), and open any item in the item panel.

import { ApiError, catalogItem, catalogPage, recommend } from './api.js';
import { byId, clearError, el, fill, num, price, showError, table } from './dom.js';
import { showItem } from './item.js';

const PAGE = 25;
/** The `after` of the page following the one shown; null on the last. */
let nextAfter = null;

function state(item) {
  return item.embedded ? el('span', { class: 'badge good' }, 'embedded') : el('span', { class: 'badge warn' }, 'pending');
}

function rows(items, scores) {
  return items.map((item, i) => [
    el('td', {}, el('code', {}, item.id)),
    el('td', {}, el('button', { type: 'button', class: 'link', onclick: () => showItem(item.id) }, item.text)),
    el('td', { class: 'num' }, price(item.price)),
    el('td', {}, item.available ? 'yes' : el('span', { class: 'badge muted' }, 'no')),
    el('td', {}, state(item)),
    scores ? el('td', { class: 'num' }, num(scores[i])) : null,
  ].filter(Boolean));
}

function show(items, scores) {
  const headers = ['id', 'text', 'price', 'available', 'embedding'];
  if (scores) headers.push('score');
  const target = byId('catalog-table');
  if (items.length === 0) {
    fill(target, el('p', { class: 'meta' }, scores ? 'Nothing matches.' : 'The catalog is empty: PUT /v1/catalog/items adds items.'));
    return;
  }
  fill(target, table(headers, rows(items, scores), { id: 'catalog-rows' }));
}

async function browse(after) {
  const error = byId('catalog-error');
  clearError(error);
  try {
    const page = await catalogPage(after, PAGE);
    nextAfter = page.next_after || null;
    byId('catalog-next').disabled = !nextAfter;
    byId('catalog-first').disabled = after === null;
    fill(
      byId('catalog-counts'),
      el('b', {}, String(page.catalog_items)),
      ' items · ',
      el('b', {}, String(page.pending_embeddings)),
      ' waiting for their embedding',
    );
    show(page.items, null);
  } catch (failure) {
    showError(error, failure);
  }
}

async function search(event) {
  event.preventDefault();
  const query = byId('catalog-q').value.trim();
  if (!query) return browse(null);
  const error = byId('catalog-error');
  clearError(error);
  try {
    const answer = await recommend({ user: { query }, top_k: PAGE, filters: { available: false } });
    const items = await Promise.all(
      answer.items.map((item) =>
        catalogItem(item.id).catch((failure) => {
          if (failure instanceof ApiError && failure.status === 404) return { id: item.id, text: '(deleted)', available: false, embedded: false };
          throw failure;
        }),
      ),
    );
    byId('catalog-next').disabled = true;
    byId('catalog-first').disabled = false;
    show(items, answer.items.map((item) => item.score));
  } catch (failure) {
    showError(error, failure);
  }
}

/** Shows the catalog's first page (again). */
export function refreshCatalog() {
  return browse(null);
}

export function initCatalog() {
  byId('catalog-search').addEventListener('submit', search);
  byId('catalog-browse').addEventListener('click', () => {
    byId('catalog-q').value = '';
    refreshCatalog();
  });
  byId('catalog-first').addEventListener('click', refreshCatalog);
  byId('catalog-next').addEventListener('click', () => {
    if (nextAfter) browse(nextAfter);
  });
}
