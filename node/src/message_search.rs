//! Full-text search over the messages of every thread: customers' messages, replies, notes
//! and automatic replies (their text, subject, and attachment and template names), on every
//! channel, with tantivy.
//!
//! The index lives in memory only (tantivy's RAM directory). Customers' words are never
//! written to disk outside the store, which seals them, so there is no second copy to encrypt,
//! back up or erase: an erasure deletes the erased messages' documents, and every hit is read
//! back from the store before it is shown, so an erased message is never found, even before
//! the index has caught up. The price is a rebuild from the store at every start, on a
//! thread of its own while the node serves (searches meanwhile say they are incomplete).
//!
//! [`run`] keeps the index: it rebuilds it, then follows the pipeline's live events; if it
//! falls behind them (the live channel lagged), it rebuilds again.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, OwnedValue, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
    STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};
use threadline_protocol::{
    event::{Direction, ThreadKind},
    ChannelKind, EventId, EventKind, ScopeId, ThreadId, ThreadState, VerifiedEvent,
};

use crate::ingest::{Ingest, LiveEvent};
use crate::store::{Store, StoreError};

/// The analyzer's name in the index: words split on what is not a letter or digit,
/// lowercased, accents folded (`Café` finds `cafe`), words over 40 bytes left out.
const ANALYZER: &str = "threadline";
/// At most this many words of a query are used.
pub const MAX_QUERY_WORDS: usize = 16;
/// How long a message may wait before it is searchable, at most, under load.
const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// Live events taken into one commit, at most.
const BATCH: usize = 2048;
/// The words a prefix may stand for (the last word of a query is a prefix).
const PREFIX_EXPANSIONS: u32 = 64;

/// A search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The index refused an operation.
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The index's size could not be read.
    #[error("search index: {0}")]
    Size(#[from] std::io::Error),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    /// The event's id (hex), stored.
    event: Field,
    /// The thread's id (hex), stored.
    thread: Field,
    /// The channel a customer's message came on, or a reply went to.
    channel: Field,
    /// The author time in ms since the epoch, stored and fast (the order of results).
    at: Field,
    /// The words, not stored (hits read them from the store).
    text: Field,
}

/// What a search asks for.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    /// Words (all must be in a message; the last may be the start of a word) and
    /// `"quoted phrases"`.
    pub text: String,
    /// Messages that came on, or went to, this channel.
    pub channel: Option<ChannelKind>,
    /// Written at or after (ms since the epoch).
    pub from: Option<u64>,
    /// Written before (ms since the epoch).
    pub until: Option<u64>,
}

/// A message the index found (read it from the store before showing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Its thread.
    pub thread: ThreadId,
    /// The message.
    pub event: EventId,
}

/// A short piece of a message around the words a query found: `(text, is a match)` parts.
pub type Snippet = Vec<(String, bool)>;

/// How far the index is: ready once the rebuild at start is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Whether every stored message is in the index.
    pub ready: bool,
    /// Threads indexed by the rebuild so far.
    pub threads_done: u64,
    /// Threads the rebuild has to index.
    pub threads_total: u64,
    /// The memory the index's committed segments take, in bytes.
    pub bytes: u64,
}

/// The in-memory index and what reads it (one per node, shared).
pub struct MessageSearch {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    ready: AtomicBool,
    threads_done: AtomicU64,
    threads_total: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for MessageSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSearch")
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

impl MessageSearch {
    /// An empty index (filled by [`run`]).
    pub fn new() -> Result<Self, SearchError> {
        let mut schema = Schema::builder();
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            event: schema.add_text_field("event", STRING | STORED),
            thread: schema.add_text_field("thread", STRING | STORED),
            channel: schema.add_text_field("channel", STRING),
            at: schema.add_u64_field("at", FAST | INDEXED | STORED),
            text: schema.add_text_field("text", text_options),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(ANALYZER, analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(MessageSearch {
            index,
            reader,
            fields,
            analyzer: analyzer(),
            ready: AtomicBool::new(false),
            threads_done: AtomicU64::new(0),
            threads_total: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// How far the rebuild at start is.
    pub fn progress(&self) -> Progress {
        Progress {
            ready: self.ready.load(Ordering::Acquire),
            threads_done: self.threads_done.load(Ordering::Relaxed),
            threads_total: self.threads_total.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// The words of `text` as the index keeps them.
    fn words(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while let Some(token) = stream.next() {
            words.push(token.text.clone());
        }
        words
    }

    /// The parts of a query: phrases (in quotes) and words, as the index keeps them; the last
    /// word, unless the query ends in a space or a quote, is a prefix.
    fn query_parts(&self, text: &str) -> (Vec<Vec<String>>, Vec<String>, Option<String>) {
        let mut phrases = Vec::new();
        let mut words = Vec::new();
        for (n, part) in text.split('"').enumerate() {
            let part_words = self.words(part);
            if n % 2 == 1 && part_words.len() > 1 {
                phrases.push(part_words);
            } else {
                words.extend(part_words);
            }
        }
        let open_end = text
            .chars()
            .last()
            .is_some_and(|last| last.is_alphanumeric());
        let prefix = if open_end && text.matches('"').count().is_multiple_of(2) {
            words.pop()
        } else {
            None
        };
        (phrases, words, prefix)
    }

    fn query(&self, query: &MessageQuery) -> Option<Box<dyn Query>> {
        let (phrases, words, prefix) = self.query_parts(&query.text);
        let term = |word: &str| Term::from_field_text(self.fields.text, word);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for phrase in phrases.iter().take(MAX_QUERY_WORDS) {
            let terms = phrase.iter().map(|w| term(w)).collect();
            clauses.push((Occur::Must, Box::new(PhraseQuery::new(terms))));
        }
        for word in words.iter().take(MAX_QUERY_WORDS) {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term(word), IndexRecordOption::Basic)),
            ));
        }
        if let Some(prefix) = &prefix {
            let mut starts = PhrasePrefixQuery::new(vec![term(prefix)]);
            starts.set_max_expansions(PREFIX_EXPANSIONS);
            clauses.push((Occur::Must, Box::new(starts)));
        }
        if clauses.is_empty() {
            return None;
        }
        if let Some(channel) = query.channel {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.channel, channel.as_str()),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if query.from.is_some() || query.until.is_some() {
            let at = |ms: u64| Term::from_field_u64(self.fields.at, ms);
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    query
                        .from
                        .map_or(Bound::Unbounded, |ms| Bound::Included(at(ms))),
                    query
                        .until
                        .map_or(Bound::Unbounded, |ms| Bound::Excluded(at(ms))),
                )),
            ));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    /// The messages matching `query`, newest first, from the `offset`-th; none for a query
    /// with no words.
    pub fn hits(
        &self,
        query: &MessageQuery,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        let Some(parsed) = self.query(query) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let found: Vec<(Option<u64>, DocAddress)> = searcher.search(
            &parsed,
            &TopDocs::with_limit(limit)
                .and_offset(offset)
                .order_by_u64_field("at", Order::Desc),
        )?;
        let mut hits = Vec::with_capacity(found.len());
        for (_, address) in found {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text_of = |field: Field| {
                doc.get_first(field).and_then(|value| match value.into() {
                    OwnedValue::Str(text) => Some(text),
                    _ => None,
                })
            };
            let (Some(thread), Some(event)) = (
                text_of(self.fields.thread).and_then(|t| t.parse().ok()),
                text_of(self.fields.event).and_then(|e| e.parse().ok()),
            ) else {
                continue;
            };
            hits.push(Hit { thread, event });
        }
        Ok(hits)
    }

    /// Up to `max_chars` characters of `text` around the first of its words `query` asks
    /// for, with every such word marked.
    pub fn snippet(&self, query: &str, text: &str, max_chars: usize) -> Snippet {
        let (phrases, mut words, prefix) = self.query_parts(query);
        words.extend(phrases.into_iter().flatten());
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut marks: Vec<(usize, usize)> = Vec::new();
        while let Some(token) = stream.next() {
            let found = words.contains(&token.text)
                || prefix
                    .as_ref()
                    .is_some_and(|p| token.text.starts_with(p.as_str()));
            if found {
                marks.push((token.offset_from, token.offset_to));
            }
        }
        // A window of `max_chars` characters that starts a little before the first match.
        let first = marks.first().map_or(0, |m| m.0);
        let lead = max_chars / 4;
        let start = text[..first]
            .char_indices()
            .rev()
            .nth(lead)
            .map_or(0, |(at, _)| at);
        let end = text[start..]
            .char_indices()
            .nth(max_chars)
            .map_or(text.len(), |(at, _)| start + at);
        let mut parts: Snippet = Vec::new();
        let mut push = |piece: &str, hit: bool| {
            if !piece.is_empty() {
                parts.push((piece.to_owned(), hit));
            }
        };
        if start > 0 {
            push("…", false);
        }
        let mut at = start;
        for (from, to) in marks {
            if from < at || to > end {
                continue;
            }
            push(&text[at..from], false);
            push(&text[from..to], true);
            at = to;
        }
        push(&text[at..end], false);
        if end < text.len() {
            push("…", false);
        }
        parts
    }
}

/// The text a message is found by: its words, subject, attachment and template names.
fn searchable_text(event: &VerifiedEvent) -> Option<String> {
    let content = event.content()?;
    let mut text = content.text.clone();
    let mut add = |more: &str| {
        if !more.is_empty() {
            text.push('\n');
            text.push_str(more);
        }
    };
    if let Some(subject) = &content.subject {
        add(&subject.to_string());
    }
    for attachment in &content.attachments {
        add(attachment.name.as_str());
    }
    if let Some(template) = &content.template {
        add(&template.name.to_string());
        for parameter in &template.parameters {
            add(&parameter.to_string());
        }
    }
    Some(text)
}

/// The channel a message of `kind` is filed under, in a thread whose state before it is
/// `state`: the channel a customer wrote on, the one a reply was routed to; none for notes.
/// `None` as a whole if the kind is not searched.
fn filed_under(kind: &EventKind, state: &ThreadState) -> Option<Option<ChannelKind>> {
    match kind {
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Inbound { channel },
        })
        | EventKind::Thread(ThreadKind::AutoReply { channel }) => Some(Some(*channel)),
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Outbound,
        }) => Some(Some(
            state.route.map_or(state.opened_on, |route| route.channel),
        )),
        EventKind::Thread(ThreadKind::Note) => Some(None),
        _ => None,
    }
}

/// What writes the index (one, owned by [`run`]).
struct Indexer {
    search: Arc<MessageSearch>,
    writer: IndexWriter,
}

impl Indexer {
    fn new(search: Arc<MessageSearch>) -> Result<Self, SearchError> {
        let options = tantivy::indexer::IndexWriterOptions::builder()
            .num_worker_threads(1)
            .num_merge_threads(1)
            .build();
        let writer = search.index.writer_with_options(options)?;
        Ok(Indexer { search, writer })
    }

    fn event_term(&self, id: &EventId) -> Term {
        Term::from_field_text(self.search.fields.event, &id.to_string())
    }

    /// Indexes `event` of `thread` (whose state before it is `state`), if it is a message
    /// with content; replaces what was indexed for it before.
    fn add(
        &mut self,
        thread: ThreadId,
        event: &VerifiedEvent,
        state: &ThreadState,
    ) -> Result<(), SearchError> {
        let Some(channel) = filed_under(&event.header().kind, state) else {
            return Ok(());
        };
        let Some(text) = searchable_text(event) else {
            return Ok(());
        };
        let fields = self.search.fields;
        self.writer.delete_term(self.event_term(&event.id()));
        let mut doc = TantivyDocument::new();
        doc.add_text(fields.event, event.id().to_string());
        doc.add_text(fields.thread, thread.to_string());
        if let Some(channel) = channel {
            doc.add_text(fields.channel, channel.as_str());
        }
        doc.add_u64(fields.at, event.header().author_time.as_millis());
        doc.add_text(fields.text, text);
        self.writer.add_document(doc)?;
        Ok(())
    }

    fn erase(&mut self, targets: &[EventId]) {
        for target in targets {
            self.writer.delete_term(self.event_term(target));
        }
    }

    /// Makes what was added and erased searchable.
    fn commit(&mut self) -> Result<(), SearchError> {
        self.writer.commit()?;
        self.search.reader.reload()?;
        let usage = self.search.reader.searcher().space_usage()?;
        self.search
            .bytes
            .store(usage.total().get_bytes(), Ordering::Relaxed);
        Ok(())
    }

    /// Indexes every stored message again, from nothing.
    fn rebuild(&mut self, store: &Store) -> Result<(), SearchError> {
        let started = Instant::now();
        let search = Arc::clone(&self.search);
        search.ready.store(false, Ordering::Release);
        self.writer.delete_all_documents()?;
        let mut threads = Vec::new();
        for entry in store.thread_states() {
            threads.push(entry?.0);
        }
        search
            .threads_total
            .store(threads.len() as u64, Ordering::Relaxed);
        search.threads_done.store(0, Ordering::Relaxed);
        let mut last_commit = Instant::now();
        let mut n_messages = 0_u64;
        for (n, thread) in threads.into_iter().enumerate() {
            let mut state: Option<ThreadState> = None;
            for event in store.verified_log(&ScopeId::Thread(thread))? {
                match &mut state {
                    None => state = ThreadState::opened(&event),
                    Some(state) => {
                        if event.content().is_some() {
                            self.add(thread, &event, state)?;
                            n_messages += 1;
                        }
                        state.apply(&event);
                    }
                }
            }
            search.threads_done.store(n as u64 + 1, Ordering::Relaxed);
            // What is done so far is searchable while the rest is indexed.
            if last_commit.elapsed() > Duration::from_secs(2) {
                self.commit()?;
                last_commit = Instant::now();
            }
        }
        self.commit()?;
        search.ready.store(true, Ordering::Release);
        tracing::info!(
            threads = search.threads_total.load(Ordering::Relaxed),
            events_with_content = n_messages,
            took_ms = started.elapsed().as_millis() as u64,
            "message search index built"
        );
        Ok(())
    }

    /// Takes in events the pipeline has stored since (messages indexed, erasures applied).
    fn follow(&mut self, store: &Store, events: &[LiveEvent]) -> Result<(), SearchError> {
        for live in events {
            let ScopeId::Thread(thread) = live.scope else {
                continue;
            };
            let wanted = matches!(
                live.kind,
                "thread.message.inbound"
                    | "thread.message.outbound"
                    | "thread.note"
                    | "thread.auto_reply"
                    | "thread.erase"
            );
            if !wanted {
                continue;
            }
            let Some(event) = store.event(&live.scope, &live.event)? else {
                continue;
            };
            let event = VerifiedEvent::from_own_store(live.event, event);
            if let EventKind::Thread(ThreadKind::Erase { targets }) = &event.header().kind {
                self.erase(targets);
                continue;
            }
            if event.content().is_none() {
                continue;
            }
            let Some(state) = store.thread_state(&thread)? else {
                continue;
            };
            self.add(thread, &event, &state)?;
        }
        self.commit()
    }
}

/// Keeps `ingest`'s message search: builds it from the store, then follows what the pipeline
/// stores, until the node closes.
pub async fn run(ingest: Ingest) {
    let search = Arc::clone(ingest.message_search());
    let mut live = ingest.subscribe();
    let mut indexer = None;
    loop {
        // Build from the store, keeping what is stored meanwhile to take in after.
        let store = ingest.store().clone();
        let building_search = Arc::clone(&search);
        let reuse = indexer.take();
        let build = tokio::task::spawn_blocking(move || {
            let mut indexer = match reuse {
                Some(indexer) => indexer,
                None => Indexer::new(building_search)?,
            };
            indexer.rebuild(&store).map(|()| indexer)
        });
        tokio::pin!(build);
        let mut queued = Vec::new();
        let mut lagged_while_building = false;
        let built = loop {
            tokio::select! {
                built = &mut build => break built,
                event = live.recv() => match event {
                    Ok(event) => queued.push(event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        lagged_while_building = true;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = ingest.closing() => return,
            }
        };
        let mut current = match built {
            Ok(Ok(built)) => built,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "message search index not built; trying again in 30 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(30)) => continue,
                    () = ingest.closing() => return,
                }
            }
            Err(_) => return,
        };
        if lagged_while_building {
            // Events stored meanwhile were missed: what the rebuild read may lack them.
            tracing::info!(
                "message search fell behind the live events while it was built; building it again"
            );
            indexer = Some(current);
            continue;
        }
        // Then follow, a batch at a time.
        let mut last_commit = Instant::now();
        let lagged = loop {
            if queued.is_empty() {
                tokio::select! {
                    event = live.recv() => match event {
                        Ok(event) => queued.push(event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = ingest.closing() => return,
                }
            }
            let wait = COMMIT_EVERY.saturating_sub(last_commit.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let mut lagged = false;
            while queued.len() < BATCH {
                match live.try_recv() {
                    Ok(event) => queued.push(event),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                        lagged = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if lagged {
                break true;
            }
            let batch = std::mem::take(&mut queued);
            let store = ingest.store().clone();
            let followed = tokio::task::spawn_blocking(move || {
                let result = current.follow(&store, &batch);
                (current, result)
            })
            .await;
            let Ok((back, result)) = followed else {
                return;
            };
            current = back;
            last_commit = Instant::now();
            if let Err(err) = result {
                tracing::warn!(error = %err, "message search fell behind; building it again");
                break false;
            }
        };
        if lagged {
            tracing::info!("message search fell behind the live events; building it again");
        }
        indexer = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(snippet: &Snippet) -> String {
        snippet
            .iter()
            .map(|(text, hit)| {
                if *hit {
                    format!("[{text}]")
                } else {
                    text.clone()
                }
            })
            .collect()
    }

    #[test]
    fn a_query_is_words_phrases_and_a_last_word_that_may_be_cut_short() {
        let search = MessageSearch::new().expect("index");
        let (phrases, words, prefix) = search.query_parts("Refund \"Broken Café\" ord");
        assert_eq!(phrases, vec![vec!["broken".to_owned(), "cafe".to_owned()]]);
        assert_eq!(words, vec!["refund".to_owned()]);
        assert_eq!(prefix.as_deref(), Some("ord"));
        // Ended by a space or a quote: every word whole.
        let (_, words, prefix) = search.query_parts("order ");
        assert_eq!((words, prefix), (vec!["order".to_owned()], None));
        let (phrases, words, prefix) = search.query_parts("\"order 12\"");
        assert_eq!(
            (phrases.len(), words.len(), prefix),
            (1, 0, None),
            "a phrase"
        );
        // A one-word phrase is a word; punctuation alone is nothing.
        let (phrases, words, prefix) = search.query_parts("\"order\" ?!");
        assert_eq!(
            (phrases.len(), words, prefix),
            (0, vec!["order".to_owned()], None)
        );
    }

    #[test]
    fn a_snippet_is_a_window_around_the_first_match_with_every_match_marked() {
        let search = MessageSearch::new().expect("index");
        let text = format!(
            "{}the parcel — Zürich's PARCELS — arrived {}",
            "é".repeat(300),
            "ü".repeat(300)
        );
        let snippet = search.snippet("parcel", &text, 60);
        let shown = shown(&snippet);
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert!(
            shown.contains("the [parcel] — Zürich's [PARCELS]"),
            "{shown}"
        );
        assert!(shown.chars().count() <= 60 + 2 + 4, "{shown}");
        // Whole words only, unless the last word of the query is cut short.
        assert_eq!(
            shown_of(&search, "zurich ", "Zürich's zurichers"),
            "[Zürich]'s zurichers"
        );
        assert_eq!(
            shown_of(&search, "zurich", "Zürich's zurichers"),
            "[Zürich]'s [zurichers]"
        );
        // A short text is whole, with no mark when the match was elsewhere (a file's name).
        assert_eq!(shown_of(&search, "invoice", "See attached"), "See attached");
    }

    fn shown_of(search: &MessageSearch, query: &str, text: &str) -> String {
        shown(&search.snippet(query, text, 160))
    }
}
