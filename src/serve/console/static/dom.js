// Building the page's elements. Text goes in as text (textContent), never
// as markup: item texts, reasons and error messages are data, some of it
// the storefront's. No function here takes HTML.

/**
 * A new element: `el('td', { class: 'num', title: 'x' }, 'text', child)`.
 * Strings and numbers among the children become text nodes; null and
 * undefined are skipped. Attributes are set one by one (never markup).
 */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces everything in `element` with `children`. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** The element of this id (the page's fixed parts). */
export function byId(id) {
  return document.getElementById(id);
}

/** Shows `error` (an ApiError or any Error) in the box `element`. */
export function showError(element, error) {
  const text = typeof error.describe === 'function' ? error.describe() : String(error.message || error);
  fill(element, el('strong', {}, 'Error '), text);
  element.hidden = false;
}

export function clearError(element) {
  fill(element);
  element.hidden = true;
}

/** A number with `digits` decimals, or an em dash for none. */
export function num(value, digits = 3) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '—';
}

/** A price as the catalog holds it (no currency: the storefront's). */
export function price(value) {
  return typeof value === 'number' ? value.toFixed(2) : '—';
}

/** A two-column table of label → value rows. */
export function facts(rows) {
  return el(
    'dl',
    { class: 'facts' },
    rows.flatMap(([label, value]) => [el('dt', {}, label), el('dd', {}, value)]),
  );
}

/** A table with a header row and body rows (each a list of cells). */
export function table(headers, rows, attributes = {}) {
  return el(
    'table',
    attributes,
    el('thead', {}, el('tr', {}, headers.map((header) => el('th', {}, header)))),
    el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((cell) => (cell instanceof Node && cell.tagName === 'TD' ? cell : el('td', {}, cell)))))),
  );
}
