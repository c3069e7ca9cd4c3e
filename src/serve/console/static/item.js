// The item panel: one catalog item as stored (GET /v1/catalog/items/{id}),
// whether retrieval can find it yet (embedded) or it still waits for its
// embedding (pending), and a button that adds it to the shopper's history.

import { catalogItem } from './api.js';
import { byId, clearError, el, facts, fill, price, showError } from './dom.js';

/** Asks the shopper panel (search.js) to add an item to the history. */
export function addToHistory(item) {
  document.dispatchEvent(new CustomEvent('shopper:history-add', { detail: { id: item.id, text: item.text } }));
}

function attributeRows(attributes) {
  if (!attributes || typeof attributes !== 'object') return [];
  return Object.entries(attributes).map(([name, value]) => [
    name,
    Array.isArray(value) ? value.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(', ') : typeof value === 'string' ? value : JSON.stringify(value),
  ]);
}

function render(item) {
  const state = item.embedded
    ? el('span', { class: 'badge good' }, 'embedded')
    : el('span', { class: 'badge warn', title: 'retrieval cannot find it until its embedding is computed' }, 'pending');
  return [
    el('p', { class: 'item-text', id: 'item-text' }, item.text),
    facts([
      ['id', el('code', {}, item.id)],
      ['price', price(item.price)],
      ['available', item.available ? 'yes' : 'no'],
      ['embedding', state],
      ...attributeRows(item.attributes),
    ]),
    el('div', { class: 'row' }, el('button', { type: 'button', onclick: () => addToHistory(item) }, 'Add to shopper history')),
  ];
}

/** Shows the item `id` in the panel. */
export async function showItem(id) {
  const detail = byId('item-detail');
  const error = byId('item-error');
  clearError(error);
  fill(detail, el('span', { class: 'meta' }, 'loading…'));
  try {
    fill(detail, render(await catalogItem(id)));
  } catch (failure) {
    fill(detail, el('code', {}, id));
    showError(error, failure);
  }
}
