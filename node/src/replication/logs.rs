//! What a node tells a peer about its logs, and which events it sends for a `Want`: plain
//! functions over the store, run on blocking threads by the replication service.

use std::collections::{HashMap, HashSet};

use threadline_protocol::{
    codec,
    sync::{heads_digest, ScopeSummary, MAX_EVENTS_PER_WANT, MAX_FRAME_BYTES},
    Event, EventId, OrgId, ScopeId,
};

use crate::store::{Store, StoreError};

/// Room left in a frame for the `Events` wrapper around the events.
const FRAME_OVERHEAD: usize = 1024;

/// Whether a node of `peer_org` may hold `scope` when this node is of `our_org`. `members` are
/// the thread's member orgs (`None` for a directory, or a thread this node does not hold).
pub fn may_share(
    scope: &ScopeId,
    our_org: OrgId,
    peer_org: OrgId,
    members: Option<&std::collections::BTreeSet<OrgId>>,
) -> bool {
    match scope {
        ScopeId::Directory(org) => *org == our_org && peer_org == our_org,
        ScopeId::Thread(_) => members.is_some_and(|members| members.contains(&peer_org)),
    }
}

/// Whether `peer_org` may hold `scope`, looking the thread's members up in the store.
pub fn may_share_stored(
    store: &Store,
    scope: &ScopeId,
    our_org: OrgId,
    peer_org: OrgId,
) -> Result<bool, StoreError> {
    let members = match scope {
        ScopeId::Thread(thread) => store.thread_state(thread)?.map(|state| state.members),
        ScopeId::Directory(_) => None,
    };
    Ok(may_share(scope, our_org, peer_org, members.as_ref()))
}

/// Whether a node of `peer_org` may have a blob: an event of a log the two may share refers
/// to it.
pub fn may_share_blob(
    store: &Store,
    blob: &threadline_protocol::id::BlobHash,
    our_org: OrgId,
    peer_org: OrgId,
) -> Result<bool, StoreError> {
    for (scope, _) in store.blob_refs(blob)? {
        if may_share_stored(store, &scope, our_org, peer_org)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The summaries of every log this node holds that a node of `peer_org` may hold too (the
/// directory to this org's nodes; threads both orgs are members of), sorted by scope.
pub fn shared_summaries(
    store: &Store,
    our_org: OrgId,
    peer_org: OrgId,
) -> Result<Vec<ScopeSummary>, StoreError> {
    let mut summaries = Vec::new();
    if peer_org == our_org {
        let scope = ScopeId::Directory(our_org);
        if let Some((n_events, heads)) = store.heads(&scope)? {
            summaries.push(ScopeSummary::new(scope, n_events, heads_digest(&heads)));
        }
    }
    for thread in store.thread_summaries() {
        let thread = thread?;
        // Both orgs members, as both sides see it: a thread this org was removed from (it
        // keeps what it had) is in neither side's summaries, so their digests can be equal.
        if thread.members.contains(&peer_org) && thread.members.contains(&our_org) {
            summaries.push(ScopeSummary::new(
                ScopeId::Thread(thread.thread),
                thread.n_events,
                heads_digest(&thread.heads),
            ));
        }
    }
    summaries.sort_unstable_by_key(|summary| summary.scope);
    Ok(summaries)
}

/// The events of `scope` a peer whose heads are `have` lacks, in linear order (parents first):
/// those that are not `have` or their ancestors, of depth at least `from_depth`; at most
/// `max_events` and what fits a frame. Also says whether that was all of them.
pub fn events_for_want(
    store: &Store,
    scope: &ScopeId,
    have: &[EventId],
    from_depth: u64,
    max_events: u32,
) -> Result<(Vec<Event>, bool), StoreError> {
    let log = store.log_with_ids(scope)?;
    let parents: HashMap<EventId, &[EventId]> = log
        .iter()
        .map(|(id, event)| (*id, event.signed.header.parents.as_slice()))
        .collect();
    // The peer has every ancestor of each of its heads that we know.
    let mut known: HashSet<EventId> = HashSet::new();
    let mut stack: Vec<EventId> = have
        .iter()
        .filter(|id| parents.contains_key(id))
        .copied()
        .collect();
    while let Some(id) = stack.pop() {
        if known.insert(id) {
            if let Some(of) = parents.get(&id) {
                stack.extend(of.iter().filter(|p| !known.contains(p)).copied());
            }
        }
    }
    let max_events = max_events.min(MAX_EVENTS_PER_WANT) as usize;
    let mut events = Vec::new();
    let mut bytes = FRAME_OVERHEAD;
    let mut complete = true;
    for (id, event) in log {
        if known.contains(&id) || event.signed.header.depth < from_depth {
            continue;
        }
        let size = codec::encode(&event).map(|b| b.len()).unwrap_or(usize::MAX);
        if events.len() >= max_events || bytes.saturating_add(size) > MAX_FRAME_BYTES {
            complete = false;
            break;
        }
        bytes += size;
        events.push(event);
    }
    Ok((events, complete))
}
