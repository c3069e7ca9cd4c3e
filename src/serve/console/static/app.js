// The console's entry point: the tabs, the status line (GET /ready), and
// each section's set-up. Sections load what they show when first opened
// and when asked again (Refresh, or after a reload or a rollback).

import { ready } from './api.js';
import { initAdmin } from './admin.js';
import { initCatalog, refreshCatalog } from './catalog.js';
import { byId, el, fill } from './dom.js';
import { refreshModel } from './model.js';
import { initSearch } from './search.js';
import { initVariants, refreshVariants } from './variants.js';

/** What opening each tab loads. */
const onOpen = {
  search: () => {},
  catalog: refreshCatalog,
  model: refreshModel,
  variants: refreshVariants,
  admin: () => {},
};

function open(name) {
  for (const tab of document.querySelectorAll('#tabs [data-tab]')) {
    tab.setAttribute('aria-selected', String(tab.dataset.tab === name));
  }
  for (const pane of document.querySelectorAll('.pane')) {
    pane.hidden = pane.id !== `pane-${name}`;
  }
  onOpen[name]();
}

/** The status line: ready with its encoder and bundle, or why not. */
async function refreshStatus() {
  const status = byId('status');
  try {
    const info = await ready();
    status.className = 'status ok';
    fill(status, el('span', { class: 'dot' }), `ready · ${info.encoder} · ${info.precision} · bundle ${info.head}`);
  } catch (failure) {
    status.className = 'status down';
    fill(status, el('span', { class: 'dot' }), `not ready · ${failure.kind}`);
  }
}

function start() {
  for (const tab of document.querySelectorAll('#tabs [data-tab]')) {
    tab.addEventListener('click', () => open(tab.dataset.tab));
  }
  initSearch();
  initCatalog();
  initVariants();
  initAdmin(() => {
    refreshStatus();
    refreshModel();
  });
  refreshStatus();
  setInterval(refreshStatus, 15000);
}

start();

