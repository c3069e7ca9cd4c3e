// The A/B variants and their live metrics: each variant's share and bundle
// (GET /v1/model), and from GET /metrics (Prometheus text, parsed here) the
// answers it gave and the events the storefront reported for them, with
// the click-through and purchase rates they make.

import { metrics, model } from './api.js';
import { byId, clearError, el, fill, num, showError, table } from './dom.js';

/**
 * The samples of Prometheus' text format: `[{name, labels, value}]`.
 * Comments and malformed lines are skipped; label values are unescaped.
 */
export function parsePrometheus(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('#')) continue;
    const match = line.exec(raw);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of (match[2] || '').matchAll(label)) {
      labels[name] = value.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** The sum of `name`'s samples whose labels include `labels`. */
function sum(samples, name, labels) {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}

function rate(part, whole) {
  return whole > 0 ? `${num((100 * part) / whole, 1)}%` : '—';
}

function render(variants, samples) {
  const count = (value) => el('td', { class: 'num' }, value.toLocaleString('en'));
  const rows = variants.map((variant) => {
    const events = (kind) => sum(samples, 'shoprank_events_total', { kind, variant: variant.name });
    const impressions = events('impression');
    const clicks = events('click');
    const purchases = events('purchase');
    return [
      el('td', {}, el('b', {}, variant.name)),
      el('td', { class: 'num' }, `${num(variant.share * 100, 0)}%`),
      el('td', {}, el('code', {}, variant.bundle), variant.follows_current ? el('small', {}, ' (current)') : el('small', {}, ' (fixed)')),
      count(sum(samples, 'shoprank_variant_requests_total', { variant: variant.name })),
      count(impressions),
      count(clicks),
      count(events('add_to_cart')),
      count(purchases),
      el('td', { class: 'num' }, rate(clicks, impressions)),
      el('td', { class: 'num' }, rate(purchases, impressions)),
    ];
  });
  return table(
    ['variant', 'share', 'bundle', 'answers', 'impressions', 'clicks', 'carts', 'purchases', 'CTR', 'purchase rate'],
    rows,
    { id: 'variants-table' },
  );
}

/** Reads the variants and the metrics again and shows them. */
export async function refreshVariants() {
  const error = byId('variants-error');
  clearError(error);
  try {
    const [info, text] = await Promise.all([model(), metrics()]);
    fill(byId('variants'), render(info.variants, parsePrometheus(text)));
  } catch (failure) {
    showError(error, failure);
  }
}

export function initVariants() {
  byId('variants-refresh').addEventListener('click', refreshVariants);
}
