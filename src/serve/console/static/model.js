// The model: the encoder and its precision, the bundle serving now, how it
// was trained (its training record) and how it did on the inner
// validation split, from GET /v1/model.

import { model } from './api.js';
import { byId, clearError, el, facts, fill, num, showError, table } from './dom.js';

/** Each epoch row with its ensemble member (a new member starts at epoch 1). */
function epochRows(epochs, bestEpochs) {
  let member = 0;
  return epochs.map((epoch, i) => {
    if (i > 0 && epoch.epoch <= epochs[i - 1].epoch) member += 1;
    const refit = epoch.val_ndcg10 === undefined || epoch.val_ndcg10 === null;
    const best = bestEpochs[member] === epoch.epoch && !refit;
    return [
      el('td', { class: 'num' }, member + 1),
      el('td', { class: 'num' }, epoch.epoch),
      el('td', { class: 'num' }, num(epoch.loss, 4)),
      el('td', { class: 'num' }, refit ? 'refit' : num(epoch.val_ndcg10, 4)),
      el('td', {}, best ? el('span', { class: 'badge good' }, 'selected') : ''),
    ];
  });
}

function optionRows(options) {
  return Object.entries(options || {}).map(([name, value]) => [el('td', {}, el('code', {}, name)), el('td', {}, JSON.stringify(value))]);
}

function render(info) {
  const cards = [];
  const summary = [
    ['encoder', el('code', {}, info.encoder)],
    ['precision', info.precision],
    ['bundle', el('code', { id: 'model-version' }, info.head)],
  ];
  const training = info.training;
  if (training) {
    summary.push(
      ['trained', training.date],
      ['examples', training.examples.toLocaleString('en')],
      ['training time', `${num(training.seconds, 0)} s`],
      ['members', `${training.best_epochs.length} (epochs ${training.best_epochs.join(', ')})`],
      ['data', el('code', {}, training.data)],
      ['rows', training.data_summary],
      ['command', el('code', {}, training.command)],
    );
  }
  cards.push(el('div', { class: 'card' }, el('h2', {}, 'Bundle'), facts(summary)));

  const validation = info.validation;
  const metrics = validation
    ? table(
        ['metric', 'value'],
        ['ndcg@10', 'recall@10', 'hit@10', 'mrr', 'auc'].map((name) => [name, el('td', { class: 'num' }, num(validation[name], 4))]),
        { id: 'validation' },
      )
    : el('p', { class: 'meta' }, 'The bundle records no validation metrics.');
  cards.push(
    el(
      'div',
      { class: 'card' },
      el('h2', {}, 'Validation'),
      el('p', { class: 'meta' }, 'Inner-validation split of the training log (EVAL_PROTOCOL v1 §4), the selected weights.'),
      metrics,
      training && training.limits.length ? [el('h3', {}, 'Limits met'), el('ul', {}, training.limits.map((limit) => el('li', {}, limit)))] : null,
    ),
  );

  if (training) {
    cards.push(
      el(
        'div',
        { class: 'card' },
        el('h2', {}, 'Training epochs'),
        table(['member', 'epoch', 'loss', 'val ndcg@10', ''], epochRows(training.epochs, training.best_epochs)),
      ),
      el(
        'div',
        { class: 'card' },
        el('h2', {}, 'Stages and options'),
        training.stages.length
          ? table(
              ['stage', 'seconds', 'peak RSS MiB'],
              training.stages.map((stage) => [stage.name, el('td', { class: 'num' }, num(stage.seconds, 1)), el('td', { class: 'num' }, num(stage.peak_rss_mib, 0))]),
            )
          : null,
        el('h3', {}, 'Trainer options'),
        table(['option', 'value'], optionRows(training.options)),
      ),
    );
  } else {
    cards.push(el('div', { class: 'card' }, el('p', { class: 'meta' }, 'The bundle records no training run.')));
  }
  return el('div', { class: 'grid2' }, cards);
}

/** Reads GET /v1/model again and shows it. */
export async function refreshModel() {
  const error = byId('model-error');
  clearError(error);
  try {
    fill(byId('model'), render(await model()));
  } catch (failure) {
    showError(error, failure);
  }
}
