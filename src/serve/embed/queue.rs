//! The encoder queue and the batching policy. A request puts its texts on
//! the queue as one [`Group`]; catalog ingestion puts its own on a second,
//! background lane (see `ingest`). Each batch takes one text from each
//! waiting request group in turn (round robin) until the batch would exceed
//! `batching.max_batch_tokens` or `max_batch_texts`; a background batch (at
//! most `batching.background_batch_texts`) is taken instead when no request
//! waits, or after `background_every_batches` request batches in a row.
//! The queue also keeps the encoder's measured [`Throughput`], which
//! admission judges the work ahead of a request by.
//!
//! Everything here runs under the batcher's lock; the encoder thread
//! (`worker`) waits for work and calls [`Queue::take_batch`].

use std::collections::VecDeque;

use crate::config::BatchingSettings;
use crate::model::encoder::TokenizedText;

use super::{EmbedError, Ticket};

/// Each text's vector goes back on its request's channel as soon as its
/// batch is done. Unbounded: a request's channel holds at most its own texts.
pub(super) type Reply = tokio::sync::mpsc::UnboundedSender<(usize, Result<Vec<f32>, EmbedError>)>;

pub(super) struct Entry {
    pub(super) text: TokenizedText,
    pub(super) index: usize,
}

/// One caller's texts still waiting.
pub(super) struct Group {
    pub(super) id: u64,
    pub(super) entries: VecDeque<Entry>,
    pub(super) tokens: usize,
    pub(super) reply: Reply,
    pub(super) ticket: Ticket,
}

/// A text taken into a batch.
pub(super) struct Taken {
    pub(super) text: TokenizedText,
    pub(super) index: usize,
    pub(super) reply: Reply,
    pub(super) ticket: Ticket,
}

#[derive(Default)]
pub(super) struct Queue {
    /// Requests' groups, served round robin.
    pub(super) requests: VecDeque<Group>,
    /// Catalog ingestion's groups, served in order: taken when no request
    /// waits, or after `background_every_batches` request batches in a row.
    pub(super) background: VecDeque<Group>,
    /// Texts waiting, in both queues.
    pub(super) texts: usize,
    /// Request batches run since the last background batch.
    since_background: usize,
    pub(super) next_id: u64,
    /// The encoder's recent speed, for admission.
    pub(super) throughput: Throughput,
    /// No more texts are taken: the batcher was dropped or its thread died.
    pub(super) closed: bool,
}

impl Queue {
    /// Drops the groups nobody waits for; returns how many texts they held.
    pub(super) fn drop_abandoned(&mut self) -> usize {
        let before = self.texts;
        let mut kept = VecDeque::with_capacity(self.requests.len());
        for group in self.requests.drain(..) {
            if group.ticket.is_abandoned() {
                self.texts -= group.entries.len();
            } else {
                kept.push_back(group);
            }
        }
        self.requests = kept;
        before - self.texts
    }

    /// Removes one group (its caller stopped waiting); returns its texts.
    pub(super) fn withdraw(&mut self, id: u64) -> usize {
        for groups in [&mut self.requests, &mut self.background] {
            if let Some(at) = groups.iter().position(|g| g.id == id) {
                let group = groups.remove(at).expect("position is in range");
                self.texts -= group.entries.len();
                return group.entries.len();
            }
        }
        0
    }

    /// Seconds of encoder work queued ahead of a new request of `tokens`
    /// tokens: with round robin, each waiting group delays it by at most
    /// as many tokens as the request itself holds.
    pub(super) fn wait_ahead(&self, tokens: usize) -> Option<f64> {
        let rate = self.throughput.planning_rate();
        (rate > 0.0).then(|| {
            let ahead: usize = self.requests.iter().map(|g| g.tokens.min(tokens)).sum();
            ahead as f64 / rate
        })
    }

    /// The time left of the first waiting request that a newcomer of
    /// `tokens` tokens would make late, if any. Round robin shares the
    /// encoder: each waiting group `g` finishes after `Σ_h min(h, g)` tokens
    /// (every group's texts up to `g`'s own), and a newcomer adds `min(new,
    /// g)` to that, so admitting work that fits its own deadline can still
    /// push the requests admitted before it past theirs. Under overload that
    /// cascade made every request late, the encoder's work on each wasted
    /// at its deadline. A request already projected to be late is not
    /// protected (it is past saving; its deadline withdraws it).
    pub(super) fn makes_late(&self, tokens: usize) -> Option<std::time::Duration> {
        let rate = self.throughput.planning_rate();
        if rate <= 0.0 {
            return None;
        }
        self.requests.iter().find_map(|g| {
            let left = g.ticket.time_left()?;
            let finish: usize = self.requests.iter().map(|h| h.tokens.min(g.tokens)).sum();
            let (before, after) = (finish as f64 / rate, (finish + tokens.min(g.tokens)) as f64 / rate);
            (before <= left.as_secs_f64() && after > left.as_secs_f64()).then_some(left)
        })
    }

    /// Takes the next batch from a queue holding texts (see the module
    /// docs): round robin over the requests' groups, or in order from the
    /// background queue when its turn has come.
    pub(super) fn take_batch(&mut self, settings: &BatchingSettings) -> Vec<Taken> {
        let background_turn = !self.background.is_empty()
            && (self.requests.is_empty() || self.since_background >= settings.background_every_batches);
        let mut batch = Budget { texts: Vec::new(), tokens: 0, max_tokens: settings.max_batch_tokens, max_texts: 0 };
        if background_turn {
            self.since_background = 0;
            batch.max_texts = settings.background_batch_texts.min(settings.max_batch_texts);
            take_in_order(&mut self.background, &mut batch);
        } else {
            self.since_background += 1;
            batch.max_texts = settings.max_batch_texts;
            take_round_robin(&mut self.requests, &mut batch);
        }
        self.texts -= batch.texts.len();
        batch.texts
    }
}

/// Tokens per second over recent forward passes, each pass weighted by its
/// size: tokens and seconds are summed with the older passes decayed, so a
/// run of one-text passes (slow per token) cannot make the estimate forget
/// what full batches achieve, which is how queued work will run.
#[derive(Default)]
pub(super) struct Throughput {
    tokens: f64,
    secs: f64,
}

impl Throughput {
    /// How much of the sums one forward pass later still counts.
    const DECAY: f64 = 0.9;

    pub(super) fn record(&mut self, tokens: usize, secs: f64) {
        self.tokens = self.tokens * Self::DECAY + tokens as f64;
        self.secs = self.secs * Self::DECAY + secs;
    }

    /// Recent tokens below which the estimate is not trusted: the warm-up
    /// pass's few short texts, or a stream of one-text passes, run far below
    /// the speed of full batches, and admission would then refuse work the
    /// encoder can do.
    const MIN_TOKENS: f64 = 256.0;

    /// The share of the measured speed admission plans with. The passes are
    /// timed on their own; between them the encoder thread hands out
    /// vectors and takes the next batch, and under a flood of requests it
    /// waits for a core too, so work queued runs slower than the passes
    /// alone say (measured under 4x overload: 13 of 31 admitted requests
    /// missed their deadline planning with the whole speed).
    const PLANNING_SHARE: f64 = 0.8;

    /// What admission plans with: [`Self::PLANNING_SHARE`] of the measured
    /// speed (0 while unknown).
    pub(super) fn planning_rate(&self) -> f64 {
        self.tokens_per_sec() * Self::PLANNING_SHARE
    }

    /// 0 (unknown: admission does not judge by time) until enough tokens
    /// have been seen.
    pub(super) fn tokens_per_sec(&self) -> f64 {
        if self.tokens >= Self::MIN_TOKENS && self.secs > 0.0 {
            self.tokens / self.secs
        } else {
            0.0
        }
    }
}

/// A batch being filled, and its limits.
struct Budget {
    texts: Vec<Taken>,
    tokens: usize,
    max_tokens: usize,
    max_texts: usize,
}

impl Budget {
    /// Whether a text of `len` tokens may join. The first always may (a text
    /// longer than the token budget runs alone).
    fn fits(&self, len: usize) -> bool {
        self.texts.is_empty() || (self.tokens + len <= self.max_tokens && self.texts.len() < self.max_texts)
    }

    fn take(&mut self, group: &mut Group) {
        let entry = group.entries.pop_front().expect("the group has a text");
        group.tokens -= entry.text.len();
        self.tokens += entry.text.len();
        self.texts.push(Taken {
            text: entry.text,
            index: entry.index,
            reply: group.reply.clone(),
            ticket: group.ticket.clone(),
        });
    }
}

/// One text from each group in turn until the batch is full. The group
/// that did not fit goes first next time; emptied groups leave.
fn take_round_robin(groups: &mut VecDeque<Group>, batch: &mut Budget) {
    let mut resume_at = 0;
    'fill: loop {
        let mut took_any = false;
        for (at, group) in groups.iter_mut().enumerate() {
            let Some(next) = group.entries.front() else { continue };
            if !batch.fits(next.text.len()) {
                resume_at = at;
                break 'fill;
            }
            batch.take(group);
            took_any = true;
        }
        if !took_any {
            break;
        }
    }
    groups.rotate_left(resume_at);
    groups.retain(|g| !g.entries.is_empty());
}

/// Texts in arrival order until the batch is full.
fn take_in_order(groups: &mut VecDeque<Group>, batch: &mut Budget) {
    while let Some(group) = groups.front_mut() {
        while group.entries.front().is_some_and(|next| batch.fits(next.text.len())) {
            batch.take(group);
        }
        if !group.entries.is_empty() {
            break;
        }
        groups.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::test_support::{settings, text, wait_until, Recording};
    use super::super::{Batcher, Ticket};
    use super::*;
    use crate::serve::metrics::Metrics;

    #[test]
    fn one_text_passes_do_not_drag_the_throughput_below_what_batches_achieve() {
        let mut throughput = Throughput::default();
        assert_eq!(throughput.tokens_per_sec(), 0.0);
        throughput.record(4000, 0.4); // a full batch: 10,000 tokens/s
        for _ in 0..10 {
            throughput.record(10, 0.002); // one short text each: 5,000 tokens/s
        }
        let rate = throughput.tokens_per_sec();
        assert!((9000.0..10_000.0).contains(&rate), "{rate}");
    }

    #[test]
    fn the_estimate_is_not_trusted_before_enough_tokens() {
        let mut throughput = Throughput::default();
        throughput.record(24, 0.5); // a slow warm-up pass
        assert_eq!(throughput.tokens_per_sec(), 0.0);
        throughput.record(4000, 0.4);
        assert!(throughput.tokens_per_sec() > 4000.0);
    }

    fn group(id: u64, tokens: usize, ticket: Ticket) -> Group {
        let (reply, _) = tokio::sync::mpsc::unbounded_channel();
        Group { id, entries: VecDeque::new(), tokens, reply, ticket }
    }

    #[test]
    fn a_newcomer_that_would_make_an_admitted_request_late_is_found() {
        let mut queue = Queue::default();
        queue.throughput.record(1250, 1.0); // planned at 1,000 tokens/s
        let until = |ms: u64| Ticket::new(Default::default(), std::time::Instant::now() + Duration::from_millis(ms));
        // 500 tokens due in 0.8 s: done at 0.5 s alone.
        queue.requests.push_back(group(0, 500, until(800)));
        assert_eq!(queue.makes_late(200), None, "done at 0.7 s");
        let left = queue.makes_late(400).expect("done at 0.9 s: late");
        assert!(left <= Duration::from_millis(800));
        // One already late is not protected; one without a deadline neither.
        queue.requests.push_back(group(1, 2000, until(100)));
        queue.requests.push_back(group(2, 5000, Ticket::detached()));
        assert_eq!(queue.makes_late(200), None, "group 0 now finishes at 1.5 s regardless");
    }

    #[test]
    fn one_text_joins_the_next_batch_behind_a_long_request() {
        // Passes long enough that a busy machine's scheduling (the short
        // request's thread starting late) is not counted in batches.
        let forward = Recording::new(Duration::from_millis(20));
        let settings = BatchingSettings { max_batch_texts: 4, ..settings() };
        let batcher = Arc::new(Batcher::start(forward.clone(), settings, Metrics::new()));
        let long = {
            let batcher = batcher.clone();
            std::thread::spawn(move || batcher.embed((1000..1040).map(text).collect(), &Ticket::detached()))
        };
        wait_until("the long request to start", || !forward.batches.lock().unwrap().is_empty());
        let short = batcher.embed(vec![text(7)], &Ticket::detached()).unwrap();
        assert_eq!(short, vec![vec![7.0]]);
        let long = long.join().unwrap().unwrap();
        assert_eq!(long.len(), 40);
        assert!(long.iter().zip(1000..).all(|(v, id)| v[0] == id as f32), "answers go back in order");
        let batches = forward.batches.lock().unwrap();
        let at = batches.iter().position(|b| b.contains(&7)).expect("the short text ran");
        assert!(at <= 2, "the short text waited for {at} batches of the long request: {batches:?}");
    }
}
