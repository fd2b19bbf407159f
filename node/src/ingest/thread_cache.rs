//! The writer's cache of threads: recently used ones, bounded by a number of events in all,
//! holding headers only (each event's content is dropped once staged; the store keeps it).

use std::collections::HashMap;

use threadline_protocol::{ScopeId, Thread, ThreadId, VerifiedEvent};

use super::IngestError;
use crate::store::Store;
use crate::thread_facts::ThreadFacts;

/// Recently used threads, bounded by a number of events in all, each with its
/// [`ThreadFacts`] (computed when the thread is loaded, kept up to date as events enter).
pub(super) struct ThreadCache {
    threads: HashMap<ThreadId, (Thread, u64)>,
    facts: HashMap<ThreadId, ThreadFacts>,
    clock: u64,
    bound: usize,
}

impl ThreadCache {
    /// An empty cache for up to about `bound` events.
    pub(super) fn bounded(bound: usize) -> Self {
        ThreadCache {
            threads: HashMap::new(),
            facts: HashMap::new(),
            clock: 0,
            bound,
        }
    }

    /// Forgets every thread (they are read back from the store as they are next used).
    pub(super) fn clear(&mut self) {
        self.threads.clear();
        self.facts.clear();
    }

    /// Caches `thread` (unless it is cached already) as just used, and answers it.
    pub(super) fn put(&mut self, id: ThreadId, thread: Thread) -> &mut Thread {
        self.clock += 1;
        let clock = self.clock;
        self.facts
            .entry(id)
            .or_insert_with(|| ThreadFacts::of(thread.dag()));
        let entry = self.threads.entry(id).or_insert((thread, clock));
        entry.1 = clock;
        &mut entry.0
    }

    /// The thread's facts once `event`, which has just entered the cached thread, is taken in.
    pub(super) fn facts_after(
        &mut self,
        id: ThreadId,
        event: &VerifiedEvent,
    ) -> Result<ThreadFacts, IngestError> {
        let (thread, _) = self
            .threads
            .get(&id)
            .ok_or(IngestError::UnknownThread(id))?;
        let facts = self
            .facts
            .entry(id)
            .or_insert_with(|| ThreadFacts::of(thread.dag()));
        // A new thread's facts were computed from its root already.
        if thread.dag().len() > 1 {
            facts.insert(thread.dag(), event);
        }
        Ok(facts.clone())
    }

    /// Evicts the least recently used threads beyond the bound. Called between batches only: a
    /// thread changed in the current batch has writes that are not in the store yet.
    pub(super) fn trim(&mut self) {
        let mut cached: usize = self.threads.values().map(|(t, _)| t.dag().len()).sum();
        if cached <= self.bound {
            return;
        }
        let mut by_age: Vec<(u64, ThreadId, usize)> = self
            .threads
            .iter()
            .map(|(id, (thread, used))| (*used, *id, thread.dag().len()))
            .collect();
        by_age.sort_unstable();
        for (_, id, n_events) in by_age {
            if cached <= self.bound * 3 / 4 {
                break;
            }
            self.threads.remove(&id);
            self.facts.remove(&id);
            cached -= n_events;
        }
    }

    /// Whether thread `id` is cached.
    pub(super) fn contains(&self, id: &ThreadId) -> bool {
        self.threads.contains_key(id)
    }

    /// Thread `id`, read from the store (headers only) unless cached, as just used.
    pub(super) fn load(&mut self, store: &Store, id: ThreadId) -> Result<&mut Thread, IngestError> {
        if !self.threads.contains_key(&id) {
            let events = store.verified_log(&ScopeId::Thread(id))?;
            if events.is_empty() {
                return Err(IngestError::UnknownThread(id));
            }
            let mut thread = Thread::restore(events)?;
            thread.release_all_content();
            return Ok(self.put(id, thread));
        }
        self.clock += 1;
        let clock = self.clock;
        let (thread, used) = self
            .threads
            .get_mut(&id)
            .ok_or(IngestError::UnknownThread(id))?;
        *used = clock;
        Ok(thread)
    }
}
