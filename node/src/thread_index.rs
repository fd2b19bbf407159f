//! The thread list's index, in memory: every thread by its latest activity, with what the
//! list filters on (status, assignee, team, channel, labels, contact) and when a snoozed thread
//! wakes (what the node's waking task reads instead of the store). `GET /threads` walks it
//! newest first and reads only the records of the page it answers, instead of reading every
//! thread's record and sorting them all.
//!
//! The ingest writer updates it as it applies events (a thread's entry is replaced with its
//! new state's), so it shows what the store shows. It is built from the stored thread records
//! when the node starts: at once for a store of up to [`BUILD_AT_ONCE`] threads, otherwise in
//! the background while the node already serves (lists read the records meanwhile). An
//! entry the writer has put is never replaced by the build's older read of the same record.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::thread_facts::{ThreadFacts, UnreadCounts};

use threadline_protocol::{
    event::Status, thread::ThreadState, AgentId, ChannelKind, ContactId, ThreadId,
};

/// Stores with at most this many threads build the index before the node serves.
pub const BUILD_AT_ONCE: usize = 20_000;

/// What the list filters a thread on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    activity: u64,
    status: &'static str,
    assignee: Option<AgentId>,
    team: Option<String>,
    channel: ChannelKind,
    labels: BTreeSet<String>,
    contact: ContactId,
    /// For a snoozed thread, when it wakes (ms).
    snoozed_until: Option<u64>,
    /// What each agent has not read (none known: nothing unread).
    unread: UnreadCounts,
}

impl Entry {
    fn of(state: &ThreadState, facts: Option<&ThreadFacts>) -> Self {
        Entry {
            activity: state.last_activity.as_millis(),
            status: status_name(&state.status),
            assignee: state.assignee,
            team: state.team.as_ref().map(|team| team.as_str().to_owned()),
            channel: state.route.map_or(state.opened_on, |route| route.channel),
            labels: state.labels.iter().map(|l| l.as_str().to_owned()).collect(),
            contact: state.contact,
            snoozed_until: match state.status {
                Status::Snoozed { until } => Some(until.as_millis()),
                _ => None,
            },
            unread: facts.map(ThreadFacts::unread_counts).unwrap_or_default(),
        }
    }
}

/// The API's name of a status (`open`, `pending`, `snoozed`, `resolved`).
pub fn status_name(status: &Status) -> &'static str {
    match status {
        Status::Open => "open",
        Status::Pending => "pending",
        Status::Snoozed { .. } => "snoozed",
        Status::Resolved => "resolved",
    }
}

/// What a list asks for. `None` in a field: any.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// `open`, `pending`, `snoozed` or `resolved`.
    pub status: Option<&'a str>,
    /// An agent, or `Some(None)` for unassigned.
    pub assignee: Option<Option<AgentId>>,
    /// A team.
    pub team: Option<&'a str>,
    /// The channel replies go to (or it opened on, before it had a route).
    pub channel: Option<ChannelKind>,
    /// A label.
    pub label: Option<&'a str>,
    /// Contacts (a customer's, merged ones included).
    pub contacts: Option<&'a [ContactId]>,
}

impl Filter<'_> {
    /// Whether a thread in `state` is in the list.
    pub fn keeps_state(&self, state: &ThreadState) -> bool {
        self.keeps(&Entry::of(state, None))
    }

    fn keeps(&self, entry: &Entry) -> bool {
        self.status.is_none_or(|s| entry.status == s)
            && self.assignee.is_none_or(|a| entry.assignee == a)
            && self.team.is_none_or(|t| entry.team.as_deref() == Some(t))
            && self.channel.is_none_or(|c| entry.channel == c)
            && self.label.is_none_or(|l| entry.labels.contains(l))
            && self
                .contacts
                .is_none_or(|contacts| contacts.contains(&entry.contact))
    }
}

/// A page of the list: thread ids newest first, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The threads, newest activity first (ties: greater id first).
    pub threads: Vec<ThreadId>,
    /// Where the next page starts, `(activity, id)` of the last thread here; `None` on the
    /// last page.
    pub next: Option<(u64, ThreadId)>,
}

/// Threads in order of activity (`(activity, id)`, walked from the end).
type Ordered = BTreeSet<(u64, ThreadId)>;

/// The index.
#[derive(Debug, Default)]
pub struct ThreadIndex {
    by_activity: Ordered,
    /// The same, per status, per assignee and per channel: a filter on one of those walks
    /// only its threads.
    by_status: HashMap<&'static str, Ordered>,
    by_assignee: HashMap<Option<AgentId>, Ordered>,
    by_channel: HashMap<ChannelKind, Ordered>,
    /// The same per team, for the threads that have one.
    by_team: HashMap<String, Ordered>,
    /// How many threads have each channel, status and assignee (the inbox's counts without a
    /// walk).
    counts: HashMap<(ChannelKind, &'static str, Option<AgentId>), usize>,
    entries: HashMap<ThreadId, Entry>,
    ready: bool,
}

/// A team's open threads ([`ThreadIndex::team_tally`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TeamTally {
    /// Open.
    pub open: usize,
    /// Open, with messages the agent has not read.
    pub unread: usize,
}

/// How many threads each filter of the inbox holds, for one agent ([`ThreadIndex::tally`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Assigned to the agent, whatever their status.
    pub mine: usize,
    /// Open and assigned to nobody.
    pub unassigned: usize,
    /// Open.
    pub open: usize,
    /// Pending.
    pub pending: usize,
    /// Snoozed.
    pub snoozed: usize,
    /// Resolved.
    pub resolved: usize,
    /// Every thread.
    pub all: usize,
}

impl Tally {
    /// Counts `n` threads with `status` and `assignee`, for `agent`.
    fn add_many(&mut self, status: &str, assignee: Option<AgentId>, agent: AgentId, n: usize) {
        self.all += n;
        if assignee == Some(agent) {
            self.mine += n;
        }
        match status {
            "open" => {
                self.open += n;
                if assignee.is_none() {
                    self.unassigned += n;
                }
            }
            "pending" => self.pending += n,
            "snoozed" => self.snoozed += n,
            _ => self.resolved += n,
        }
    }
}

impl ThreadIndex {
    /// Whether `thread` passes `filter`, from the index alone; `None` while the index is
    /// being built or does not hold the thread (ask its stored state then).
    pub fn keeps(&self, thread: &ThreadId, filter: &Filter<'_>) -> Option<bool> {
        if !self.ready {
            return None;
        }
        self.entries.get(thread).map(|entry| filter.keeps(entry))
    }

    /// Whether every stored thread is in it (lists may use it).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Marks the build done.
    pub fn set_ready(&mut self) {
        self.ready = true;
    }

    /// Puts `thread` in with its state and facts (the writer, after each event).
    pub fn update(&mut self, thread: ThreadId, state: &ThreadState, facts: Option<&ThreadFacts>) {
        self.put(thread, Entry::of(state, facts));
    }

    fn put(&mut self, thread: ThreadId, entry: Entry) {
        if let Some(old) = self.entries.remove(&thread) {
            if let Some(n) = self
                .counts
                .get_mut(&(old.channel, old.status, old.assignee))
            {
                *n -= 1;
            }
            let key = (old.activity, thread);
            self.by_activity.remove(&key);
            for set in [
                self.by_status.get_mut(old.status),
                self.by_assignee.get_mut(&old.assignee),
                self.by_channel.get_mut(&old.channel),
                old.team
                    .as_ref()
                    .and_then(|team| self.by_team.get_mut(team)),
            ]
            .into_iter()
            .flatten()
            {
                set.remove(&key);
            }
        }
        *self
            .counts
            .entry((entry.channel, entry.status, entry.assignee))
            .or_default() += 1;
        let key = (entry.activity, thread);
        self.by_activity.insert(key);
        self.by_status.entry(entry.status).or_default().insert(key);
        self.by_assignee
            .entry(entry.assignee)
            .or_default()
            .insert(key);
        self.by_channel
            .entry(entry.channel)
            .or_default()
            .insert(key);
        if let Some(team) = &entry.team {
            self.by_team.entry(team.clone()).or_default().insert(key);
        }
        self.entries.insert(thread, entry);
    }

    /// Puts `thread` in from its stored record, unless the writer has put it already (the
    /// build).
    pub fn insert_stored(
        &mut self,
        thread: ThreadId,
        state: &ThreadState,
        facts: Option<&ThreadFacts>,
    ) {
        if !self.entries.contains_key(&thread) {
            self.update(thread, state, facts);
        }
    }

    /// The snoozed threads whose time (ms) has come by `now`, in no order.
    pub fn snoozes_ended(&self, now: u64) -> Vec<ThreadId> {
        self.by_status
            .get("snoozed")
            .into_iter()
            .flatten()
            .map(|(_, thread)| *thread)
            .filter(|thread| {
                self.entries
                    .get(thread)
                    .and_then(|entry| entry.snoozed_until)
                    .is_some_and(|until| until <= now)
            })
            .collect()
    }

    /// The smallest set `filter` narrows to (`empty` when one of its sets has no thread), and
    /// whether that set alone is the answer (the filter names nothing else).
    fn narrowed<'s>(&'s self, filter: &Filter<'_>, empty: &'s Ordered) -> (&'s Ordered, bool) {
        let narrowed = [
            filter
                .status
                .map(|status| self.by_status.get(status).unwrap_or(empty)),
            filter
                .assignee
                .map(|assignee| self.by_assignee.get(&assignee).unwrap_or(empty)),
            filter
                .channel
                .map(|channel| self.by_channel.get(&channel).unwrap_or(empty)),
            filter
                .team
                .map(|team| self.by_team.get(team).unwrap_or(empty)),
        ];
        let named = narrowed.iter().flatten().count()
            + usize::from(filter.label.is_some())
            + usize::from(filter.contacts.is_some());
        let set = narrowed
            .into_iter()
            .flatten()
            .min_by_key(|set| set.len())
            .unwrap_or(&self.by_activity);
        (
            set,
            named <= 1 && filter.label.is_none() && filter.contacts.is_none(),
        )
    }

    /// How many threads `filter` keeps: a set's size, or a walk of the smallest set it names.
    pub fn count(&self, filter: &Filter<'_>) -> usize {
        let empty = Ordered::new();
        let (set, whole) = self.narrowed(filter, &empty);
        if whole {
            return set.len();
        }
        set.iter()
            .filter(|(_, thread)| {
                self.entries
                    .get(thread)
                    .is_some_and(|entry| filter.keeps(entry))
            })
            .count()
    }

    /// How many threads each filter of the inbox holds for `agent`, within `channel` and
    /// `label` if given: from counters kept as threads change, or, for a label, one walk of
    /// the threads counting every filter at once.
    pub fn tally(
        &self,
        agent: AgentId,
        channel: Option<ChannelKind>,
        label: Option<&str>,
    ) -> Tally {
        let mut tally = Tally::default();
        if label.is_none() {
            for ((on, status, assignee), n) in &self.counts {
                if channel.is_none_or(|c| c == *on) {
                    tally.add_many(status, *assignee, agent, *n);
                }
            }
            return tally;
        }
        let filter = Filter {
            channel,
            label,
            ..Filter::default()
        };
        let empty = Ordered::new();
        let (set, _) = self.narrowed(&filter, &empty);
        for (_, thread) in set {
            if let Some(entry) = self.entries.get(thread).filter(|e| filter.keeps(e)) {
                tally.add_many(entry.status, entry.assignee, agent, 1);
            }
        }
        tally
    }

    /// How many threads each filter holds that have messages `agent` has not read, within
    /// the channel and label given: one pass over the entries as they lie in memory (no
    /// order needed, so no walk of the ordered sets).
    pub fn unread_tally(
        &self,
        agent: AgentId,
        channel: Option<ChannelKind>,
        label: Option<&str>,
    ) -> Tally {
        let filter = Filter {
            channel,
            label,
            ..Filter::default()
        };
        let mut tally = Tally::default();
        for entry in self.entries.values() {
            if entry.unread.of(agent) > 0 && filter.keeps(entry) {
                tally.add_many(entry.status, entry.assignee, agent, 1);
            }
        }
        tally
    }

    /// Per team: how many of its threads are open, and how many of those have messages
    /// `agent` has not read (a walk of the threads that have a team).
    pub fn team_tally(&self, agent: AgentId) -> BTreeMap<String, TeamTally> {
        let mut tallies = BTreeMap::new();
        for (team, set) in &self.by_team {
            let mut tally = TeamTally::default();
            for (_, thread) in set {
                let Some(entry) = self.entries.get(thread) else {
                    continue;
                };
                if entry.status == "open" {
                    tally.open += 1;
                    if entry.unread.of(agent) > 0 {
                        tally.unread += 1;
                    }
                }
            }
            if !set.is_empty() {
                tallies.insert(team.clone(), tally);
            }
        }
        tallies
    }

    /// The threads `filter` keeps, newest first, after `cursor` (exclusive), at most `limit`.
    pub fn page(&self, filter: &Filter<'_>, cursor: Option<(u64, ThreadId)>, limit: usize) -> Page {
        // The smallest set a filter narrows to (empty: nothing matches).
        let empty = Ordered::new();
        let (set, _) = self.narrowed(filter, &empty);
        let walk: Box<dyn Iterator<Item = &(u64, ThreadId)>> = match cursor {
            Some(cursor) => Box::new(set.range(..cursor).rev()),
            None => Box::new(set.iter().rev()),
        };
        let mut threads = Vec::with_capacity(limit);
        let mut more = false;
        for (_, thread) in walk {
            let Some(entry) = self.entries.get(thread) else {
                continue;
            };
            if !filter.keeps(entry) {
                continue;
            }
            if threads.len() == limit {
                more = true;
                break;
            }
            threads.push(*thread);
        }
        let next = if more {
            threads
                .last()
                .and_then(|last| self.entries.get(last).map(|e| (e.activity, *last)))
        } else {
            None
        };
        Page { threads, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(activity: u64, status: &'static str, channel: ChannelKind) -> Entry {
        Entry {
            activity,
            status,
            assignee: None,
            team: None,
            channel,
            labels: BTreeSet::new(),
            contact: ContactId::from_bytes([1; 16]),
            snoozed_until: None,
            unread: UnreadCounts::default(),
        }
    }

    fn index(entries: &[(u8, Entry)]) -> ThreadIndex {
        let mut index = ThreadIndex::default();
        for (id, entry) in entries {
            index.put(ThreadId::from_bytes([*id; 32]), entry.clone());
        }
        index.set_ready();
        index
    }

    fn ids(page: &Page) -> Vec<u8> {
        page.threads.iter().map(|t| t.as_bytes()[0]).collect()
    }

    #[test]
    fn pages_go_newest_first_and_filters_keep_their_threads_only() {
        let index = index(&[
            (1, entry(10, "open", ChannelKind::Webchat)),
            (2, entry(30, "resolved", ChannelKind::Email)),
            (3, entry(20, "open", ChannelKind::Email)),
            (4, entry(30, "open", ChannelKind::Webchat)),
            (5, entry(5, "open", ChannelKind::Whatsapp)),
        ]);
        let all = Filter::default();
        let first = index.page(&all, None, 2);
        // Ties in activity: the greater id first.
        assert_eq!(ids(&first), [4, 2]);
        let second = index.page(&all, first.next, 2);
        assert_eq!(ids(&second), [3, 1]);
        let last = index.page(&all, second.next, 2);
        assert_eq!(ids(&last), [5]);
        assert_eq!(last.next, None);

        let open_email = Filter {
            status: Some("open"),
            channel: Some(ChannelKind::Email),
            ..Filter::default()
        };
        assert_eq!(ids(&index.page(&open_email, None, 10)), [3]);
        assert_eq!(index.page(&open_email, None, 1).next, None);
        let snoozed = Filter {
            status: Some("snoozed"),
            ..Filter::default()
        };
        assert!(index.page(&snoozed, None, 10).threads.is_empty());

        // Counts agree with what the pages list, with one filter or several.
        let open = Filter {
            status: Some("open"),
            ..Filter::default()
        };
        let webchat_open = Filter {
            channel: Some(ChannelKind::Webchat),
            ..open.clone()
        };
        let labelled = Filter {
            label: Some("billing"),
            ..Filter::default()
        };
        for (filter, expected) in [
            (&all, 5),
            (&open, 4),
            (&open_email, 1),
            (&webchat_open, 2),
            (&snoozed, 0),
            (&labelled, 0),
        ] {
            assert_eq!(index.count(filter), expected, "{filter:?}");
            assert_eq!(index.page(filter, None, 100).threads.len(), expected);
        }
        // The inbox's counts, from the counters and from a walk, agree with the filters.
        let nobody = AgentId::from_bytes([9; 16]);
        let tally = index.tally(nobody, None, None);
        assert_eq!(
            (
                tally.all,
                tally.open,
                tally.unassigned,
                tally.resolved,
                tally.mine
            ),
            (5, 4, 4, 1, 0)
        );
        let webchat = index.tally(nobody, Some(ChannelKind::Webchat), None);
        assert_eq!((webchat.all, webchat.open, webchat.unassigned), (2, 2, 2));
        assert_eq!(index.tally(nobody, None, Some("billing")), Tally::default());
    }

    /// A thread's state right after it opened on the web chat.
    fn opened_state(seed: u8) -> (ThreadId, ThreadState) {
        use threadline_protocol::{
            event::{Draft, EventKind, Scope, ThreadKind},
            SecretKey, Timestamp,
        };
        let key = SecretKey::from_seed([seed; 32]);
        let root = Draft::new(
            Scope::NewThread,
            Vec::new(),
            0,
            Timestamp::from_millis(1_000),
            EventKind::Thread(ThreadKind::Opened {
                org: threadline_protocol::OrgId(key.public()),
                contact: ContactId::from_bytes([seed; 16]),
                channel: ChannelKind::Webchat,
            }),
        )
        .sign(&key)
        .expect("signs")
        .verify()
        .expect("verifies");
        let thread = ThreadId::from_root(root.id());
        (thread, ThreadState::opened(&root).expect("an opening"))
    }

    #[test]
    fn the_writers_updates_move_a_thread_and_the_build_never_overwrites_them() {
        let mut index = ThreadIndex::default();
        let (a, mut state_a) = opened_state(1);
        let (b, state_b) = opened_state(2);
        index.update(a, &state_a, None);
        index.insert_stored(b, &state_b, None);
        let stale_a = state_a.clone();
        // A new message on a: it moves to the top, once, with its new status.
        state_a.last_activity = threadline_protocol::Timestamp::from_millis(9_000);
        state_a.status = Status::Pending;
        index.update(a, &state_a, None);
        // The build's read of a's record from before that changes nothing.
        index.insert_stored(a, &stale_a, None);
        let all = index.page(&Filter::default(), None, 10);
        assert_eq!(all.threads, [a, b]);
        let pending = Filter {
            status: Some("pending"),
            ..Filter::default()
        };
        assert_eq!(index.page(&pending, None, 10).threads, [a]);
        let open = Filter {
            status: Some("open"),
            ..Filter::default()
        };
        assert_eq!(
            index.page(&open, None, 10).threads,
            [b],
            "a left the open set"
        );
    }

    #[test]
    fn only_snoozes_whose_time_has_come_are_due() {
        let snoozed = |until| Entry {
            snoozed_until: Some(until),
            ..entry(1, "snoozed", ChannelKind::Webchat)
        };
        let index = index(&[
            (1, snoozed(1_000)),
            (2, snoozed(5_000)),
            (3, entry(2, "open", ChannelKind::Webchat)),
        ]);
        assert_eq!(index.snoozes_ended(999), Vec::<ThreadId>::new());
        assert_eq!(index.snoozes_ended(1_000), [ThreadId::from_bytes([1; 32])]);
        let mut both = index.snoozes_ended(5_000);
        both.sort();
        assert_eq!(
            both,
            [ThreadId::from_bytes([1; 32]), ThreadId::from_bytes([2; 32])]
        );
    }
}
