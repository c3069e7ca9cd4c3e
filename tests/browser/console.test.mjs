// The console in a real browser (Debian's chromium, headless, driven by
// playwright-core; no browser download). Run by scripts/browser-test.
//
// Starts `target/release/shoprank serve` on 127.0.0.1:0 with a fresh store
// and an admin token, puts a small catalog through the API and waits for
// its embeddings; then, in the browser: loads /console, ranks a search with
// a profile and a history picked from the catalog, sees the reasons, opens
// an item, and walks the catalog, model, A/B and admin tabs. Along the way
// it checks that no script error or CSP violation was logged, that an item
// text holding markup shows as text, that the admin token is in no storage,
// and that every request the page made was the console's own file or a
// route of /openapi.json. Writes target/console.png (the CI artifact).
//
// Environment: SHOPRANK_BIN (default target/release/shoprank), CHROMIUM
// (default /usr/bin/chromium), CONSOLE_SCREENSHOT (default target/console.png).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const binary = process.env.SHOPRANK_BIN || path.join(root, 'target/release/shoprank');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = process.env.CONSOLE_SCREENSHOT || path.join(root, 'target/console.png');
const TOKEN = `browser-test-${process.pid}-${Date.now()}`;
const WAIT = 20_000;

/** Online Retail titles (ids the committed bundle knows), and one text with markup. */
const ITEMS = [
  { id: '85099B', text: 'JUMBO BAG RED RETROSPOT', price: 1.95, attributes: { colour: 'red' } },
  { id: '22386', text: 'JUMBO BAG PINK POLKADOT', price: 1.95, attributes: { colour: 'pink' } },
  { id: '20725', text: 'LUNCH BAG RED RETROSPOT', price: 1.65, attributes: { colour: 'red' } },
  { id: '20727', text: 'LUNCH BAG BLACK SKULL', price: 1.65, attributes: { colour: 'black' } },
  { id: '23203', text: 'JUMBO BAG DOILEY PATTERNS', price: 2.08 },
  { id: '22423', text: 'REGENCY CAKESTAND 3 TIER', price: 12.75 },
  { id: '85123A', text: 'WHITE HANGING HEART T-LIGHT HOLDER', price: 2.55, attributes: { colour: 'white' } },
  { id: '47566', text: 'PARTY BUNTING', price: 4.95 },
  { id: '84879', text: 'ASSORTED COLOUR BIRD ORNAMENT', price: 1.69 },
  { id: '21212', text: 'PACK OF 72 RETROSPOT CAKE CASES', price: 0.55 },
  { id: '22720', text: 'SET OF 3 CAKE TINS PANTRY DESIGN', price: 4.95, available: false },
  { id: 'xss-1', text: '<img src=x onerror="window.__pwned=1"> ENAMEL MUG <b>bold</b>', price: 3.5 },
];

function fail(message) {
  throw new Error(message);
}

/** `shoprank serve` on an ephemeral port, its log to `log`. */
function spawnServer(store, log) {
  return spawn(binary, ['serve', '--addr', '127.0.0.1:0'], {
    cwd: root,
    env: { ...process.env, SHOPRANK__STORE__URL: store, SHOPRANK__ADMIN__TOKEN: TOKEN, RUST_LOG: process.env.RUST_LOG || 'warn' },
    stdio: ['ignore', 'pipe', fs.openSync(log, 'w')],
  });
}

/** The server's base URL, from the address it prints, once /ready is 200. */
async function whenReady(server) {
  const base = await new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error('the server printed no address within 90 s')), 90_000);
    server.stdout.on('data', (chunk) => {
      buffered += chunk;
      const match = /listening on (\S+)/.exec(buffered);
      if (match) {
        clearTimeout(timer);
        resolve(`http://${match[1]}`);
      }
    });
    server.on('exit', (code) => reject(new Error(`the server exited (${code}) before it listened`)));
  });
  const deadline = Date.now() + 90_000;
  for (;;) {
    const status = await fetch(`${base}/ready`).then((r) => r.status, () => 0);
    if (status === 200) return base;
    if (Date.now() > deadline) fail('the server was not ready within 90 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function api(base, method, route, body) {
  const response = await fetch(`${base}${route}`, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) fail(`${method} ${route}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** Puts the catalog and waits until every item is embedded. */
async function loadCatalog(base) {
  await api(base, 'PUT', '/v1/catalog/items', { items: ITEMS });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const page = await api(base, 'GET', '/v1/catalog/items?limit=1');
    if (page.catalog_items === ITEMS.length && page.pending_embeddings === 0) return;
    if (Date.now() > deadline) fail(`embeddings still pending after 60 s: ${JSON.stringify(page)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether `method path` is an operation of the OpenAPI document. */
function documented(document, method, pathname) {
  const segments = pathname.split('/');
  return Object.entries(document.paths).some(([template, item]) => {
    if (!item[method.toLowerCase()]) return false;
    const parts = template.split('/');
    return (
      parts.length === segments.length &&
      parts.every((part, i) => (part.startsWith('{') && part.endsWith('}') ? segments[i] !== '' : part === segments[i]))
    );
  });
}

async function run(page, base, document) {
  const problems = [];
  page.on('console', (message) => {
    // The API errors the test provokes (422, 401, 409) are logged by the
    // browser as failed loads: expected, and shown in the page. Anything
    // else logged as a warning or an error (a script error, a CSP
    // violation) is a problem.
    const expected = /^Failed to load resource: the server responded with a status of 4(22|01|09) /;
    if ((message.type() === 'error' || message.type() === 'warning') && !expected.test(message.text())) {
      problems.push(`console ${message.type()}: ${message.text()}`);
    }
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  const requests = [];
  page.on('request', (request) => requests.push({ method: request.method(), url: new URL(request.url()) }));

  const step = (name) => console.log(`browser-test: ${name}`);

  step('load /console');
  const response = await page.goto(`${base}/console`);
  if (response.status() !== 200) fail(`/console answered ${response.status()}`);
  if (!(response.headers()['content-security-policy'] || '').includes("default-src 'self'")) fail('no CSP on /console');
  await page.locator('#status.ok').waitFor({ timeout: WAIT });

  step('search with a profile and a history picked from the catalog');
  await page.fill('#history-pick', '20725');
  await page.click('#history-add');
  await page.locator('#history li', { hasText: 'LUNCH BAG RED RETROSPOT' }).waitFor({ timeout: WAIT });
  await page.fill('#q', 'jumbo bag');
  await page.fill('#profile', 'buys gift bags for a small café');
  await page.click('#rank');
  await page.locator('#results .reason').first().waitFor({ timeout: WAIT });
  const results = await page.locator('#results .result').count();
  if (results < 3) fail(`only ${results} results`);
  const reasons = await page.locator('#results .reason .text').allTextContents();
  if (!reasons.some((text) => text.startsWith('matches your search "jumbo bag"'))) fail(`no search reason among ${JSON.stringify(reasons)}`);
  const titles = await page.locator('#results .title').allTextContents();
  if (!titles.some((title) => title.startsWith('JUMBO BAG'))) fail(`no jumbo bag among ${JSON.stringify(titles)}`);
  const meta = await page.locator('#search-meta').textContent();
  if (!meta.includes('variant') || !meta.includes('default.')) fail(`the answer's metadata is missing: ${meta}`);

  step('open an item');
  const first = page.locator('#results .title').first();
  const firstTitle = await first.textContent();
  await first.click();
  await page.locator('#item-text', { hasText: firstTitle }).waitFor({ timeout: WAIT });
  const detail = await page.locator('#item-detail').textContent();
  if (!detail.includes('embedded')) fail(`the item panel does not say the item is embedded: ${detail}`);
  await page.screenshot({ path: screenshot, fullPage: true });

  step('an API error is shown: rank with no signal at all');
  await page.fill('#q', '');
  await page.fill('#profile', '');
  await page.locator('#history li button').first().click();
  await page.click('#rank');
  await page.locator('#search-error', { hasText: 'missing_user_signal' }).waitFor({ timeout: WAIT });

  step('catalog: browse, markup shown as text, search');
  await page.click('[data-tab="catalog"]');
  await page.locator('#catalog-rows tbody tr').nth(ITEMS.length - 1).waitFor({ timeout: WAIT });
  const counts = await page.locator('#catalog-counts').textContent();
  if (!counts.startsWith(`${ITEMS.length} items`)) fail(`catalog counts: ${counts}`);
  await page.locator('#catalog-rows button', { hasText: '<img src=x' }).waitFor({ timeout: WAIT });
  if ((await page.locator('img, b:has-text("bold")').count()) > 0) fail('an item text was rendered as markup');
  if (await page.evaluate(() => window.__pwned === 1)) fail('an item text ran a script');
  await page.locator('#catalog-rows button', { hasText: 'ENAMEL MUG' }).click();
  await page.locator('#item-text', { hasText: '<b>bold</b>' }).waitFor({ timeout: WAIT });
  await page.fill('#catalog-q', 'cake');
  await page.click('#catalog-search button[type="submit"]');
  await page.locator('#catalog-rows th', { hasText: 'score' }).waitFor({ timeout: WAIT });
  const found = await page.locator('#catalog-rows tbody').textContent();
  if (!found.includes('CAKE')) fail(`the catalog search found no cake: ${found}`);

  step('model: bundle, validation, training record');
  await page.click('[data-tab="model"]');
  await page.locator('#model-version').waitFor({ timeout: WAIT });
  const ready = await api(base, 'GET', '/ready');
  if ((await page.locator('#model-version').textContent()) !== ready.head) fail('the model tab shows another bundle');
  await page.locator('#validation td', { hasText: 'ndcg@10' }).waitFor({ timeout: WAIT });

  step('A/B variants with live metrics');
  await page.click('[data-tab="variants"]');
  await page.locator('#variants-table tbody tr').first().waitFor({ timeout: WAIT });
  const row = (await page.locator('#variants-table tbody tr').first().locator('td').allTextContents()).map((t) => t.trim());
  if (row[0] !== 'default' || !(Number(row[3].replaceAll(',', '')) >= 2)) fail(`variant row: ${JSON.stringify(row)}`);

  step('reload and rollback behind the token');
  await page.click('[data-tab="admin"]');
  if (!(await page.locator('#reload').isDisabled())) fail('reload is enabled without a token');
  await page.fill('#token', 'not-the-token');
  await page.click('#token-form button[type="submit"]');
  await page.click('#rollback');
  await page.locator('#admin-error', { hasText: 'unauthorized' }).waitFor({ timeout: WAIT });
  await page.fill('#token', TOKEN);
  await page.click('#token-form button[type="submit"]');
  if ((await page.inputValue('#token')) !== '') fail('the token stays in its field');
  await page.click('#reload');
  await page.locator('#admin-result .success', { hasText: 'Reload' }).waitFor({ timeout: WAIT });
  await page.click('#rollback');
  await page.locator('#admin-result .success, #admin-error:not([hidden])').first().waitFor({ timeout: WAIT });
  const stored = await page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie]);
  if (stored[0] !== 0 || stored[1] !== 0 || stored[2] !== '') fail(`something was stored: ${JSON.stringify(stored)}`);
  const html = await page.content();
  if (html.includes(TOKEN)) fail('the token is in the page');

  step('every request was the console or a documented route');
  const origin = new URL(base).origin;
  for (const { method, url } of requests) {
    if (url.origin !== origin) fail(`a request left the server: ${method} ${url}`);
    if (method === 'GET' && (url.pathname === '/console' || url.pathname.startsWith('/console/'))) continue;
    if (!documented(document, method, url.pathname)) fail(`${method} ${url.pathname} is not a route of /openapi.json`);
  }
  if (problems.length) fail(`the browser logged problems:\n${problems.join('\n')}`);
  console.log(`browser-test: ${requests.length} requests, all documented; screenshot ${path.relative(root, screenshot)}`);
}

async function main() {
  const started = Date.now();
  const store = fs.mkdtempSync(path.join(os.tmpdir(), 'shoprank-browser-'));
  const log = path.join(root, 'target/browser-test-server.log');
  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  const server = spawnServer(store, log);
  let browser;
  try {
    const base = await whenReady(server);
    await loadCatalog(base);
    const document = await api(base, 'GET', '/openapi.json');
    browser = await chromium.launch({ executablePath: browserPath, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
    await run(page, base, document);
    console.log(`browser-test: passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (error) {
    console.error(`browser-test: FAILED: ${error.message}`);
    if (fs.existsSync(log)) console.error(`browser-test: the server's log: ${path.relative(root, log)}`);
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close();
    server.kill('SIGKILL');
    fs.rmSync(store, { recursive: true, force: true });
  }
}

await main();
