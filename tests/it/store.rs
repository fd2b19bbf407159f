//! The store after a restart: derived state read back from disk is exactly what a fold from
//! scratch over the stored events gives.

use threadline_node::{admin, clock, ingest, DataDir};
use threadline_protocol::{
    event::{Content, Draft, EventKind, ReceiptKind, Scope, Status, ThreadKind},
    name::{ExternalId, Label},
    ChannelKind, Directory, Handle, ScopeId, Thread,
};

/// Opens the store, waiting for the last run's to let go of it: sled's flusher thread lets
/// go of the folder's lock shortly after the last handle is dropped.
fn open_when_released(data_dir: &DataDir) -> threadline_node::store::Store {
    threadline_tests::eventually(
        "the store opens once the last one has let go of it",
        std::time::Duration::from_secs(10),
        || match admin::open_store(data_dir) {
            Err(threadline_node::store::StoreError::InUse { .. }) => None,
            other => Some(other.expect("store opens")),
        },
    )
}

/// A web chat message from `handle` on the thread `resolved` names, signed by the bridge.
fn inbound(
    resolved: &ingest::Resolved,
    handle: &Handle,
    text: &str,
    external_id: &str,
    key: &threadline_protocol::SecretKey,
) -> threadline_protocol::Event {
    Draft::new(
        Scope::Thread(resolved.thread),
        resolved.parents.clone(),
        resolved.depth,
        clock::now(),
        EventKind::inbound_message(ChannelKind::Webchat),
    )
    .with_content(
        Content::text(text)
            .with_handle(handle.clone())
            .with_external_id(ExternalId::new(external_id).expect("id")),
    )
    .sign(key)
    .expect("signs")
}

#[test]
fn reopened_derived_state_equals_a_fold_from_scratch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = DataDir::new(tmp.path().join("data"));
    let initialised = admin::init(&data_dir, clock::now()).expect("init");
    let agent = initialised.first_agent.agent.id;
    let bridge = admin::add_bridge(&data_dir, ChannelKind::Webchat, clock::now()).expect("bridge");
    let identity = data_dir.load_identity().expect("identity");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let store = admin::open_store(&data_dir).expect("store");
    // A cache of 100 events: threads are evicted and reloaded from the store as they go.
    let (pipeline, running) =
        ingest::start_with_cache(store.clone(), identity.clone(), clock::now, 100).expect("start");
    runtime.block_on(async {
        for visitor in 0..20 {
            let handle: Handle = format!("webchat:visitor-{visitor}")
                .parse()
                .expect("handle");
            for message in 0..15 {
                let resolved = pipeline.resolve(handle.clone()).await.expect("resolves");
                let event = inbound(
                    &resolved,
                    &handle,
                    &format!("message {message}"),
                    &format!("v{visitor}-m{message}"),
                    &bridge.key,
                );
                let results = pipeline.submit(vec![event]).await;
                assert!(
                    matches!(results[0], Ok(ingest::Submitted::Stored(_))),
                    "{:?}",
                    results[0]
                );
                // The agent reads some visitors' threads part of the way.
                if message == 6 + visitor % 4 && visitor % 2 == 0 {
                    let Ok(ingest::Submitted::Stored(read_up_to)) = results[0] else {
                        unreachable!("checked above")
                    };
                    pipeline
                        .act(agent, resolved.thread, ingest::Action::Read(read_up_to))
                        .await
                        .expect("read");
                }
                if message % 5 == 4 {
                    let reply = pipeline
                        .act(
                            agent,
                            resolved.thread,
                            ingest::Action::Reply {
                                text: format!("reply {message}"),
                                attachments: Vec::new(),
                                reply_to: None,
                            },
                        )
                        .await
                        .expect("reply");
                    // The bridge's receipt for it: state that grows with the thread.
                    let next = pipeline.resolve(handle.clone()).await.expect("resolves");
                    let receipt = Draft::new(
                        Scope::Thread(resolved.thread),
                        next.parents,
                        next.depth,
                        clock::now(),
                        EventKind::Thread(ThreadKind::Receipt {
                            target: reply,
                            channel: ChannelKind::Webchat,
                            receipt: ReceiptKind::Delivered,
                        }),
                    )
                    .sign(&bridge.key)
                    .expect("signs");
                    let stored = pipeline.submit(vec![receipt]).await;
                    assert!(
                        matches!(stored[0], Ok(ingest::Submitted::Stored(_))),
                        "{:?}",
                        stored[0]
                    );
                    pipeline
                        .act(
                            agent,
                            resolved.thread,
                            ingest::Action::LabelAdd(
                                Label::new(format!("l{message}")).expect("label"),
                            ),
                        )
                        .await
                        .expect("label");
                }
            }
            if visitor % 3 == 0 {
                let resolved = pipeline.resolve(handle.clone()).await.expect("resolves");
                pipeline
                    .act(
                        agent,
                        resolved.thread,
                        ingest::Action::Status(Status::Pending),
                    )
                    .await
                    .expect("status");
            }
        }
        // Every thread again, most of them long evicted: reloaded, then written to.
        for visitor in 0..20 {
            let handle: Handle = format!("webchat:visitor-{visitor}")
                .parse()
                .expect("handle");
            let resolved = pipeline.resolve(handle).await.expect("resolves");
            pipeline
                .act(
                    agent,
                    resolved.thread,
                    ingest::Action::LabelAdd(Label::new("again").expect("label")),
                )
                .await
                .expect("label");
        }
    });
    drop(pipeline);
    running.join();
    drop(store);

    // Reopen, and compare every thread's stored state with a fold from scratch.
    let store = open_when_released(&data_dir);
    let mut n_threads = 0;
    for entry in store.thread_states() {
        let (thread_id, stored_state) = entry.expect("state decodes");
        let events: Vec<_> = store
            .log_events(&ScopeId::Thread(thread_id))
            .expect("log reads")
            .into_iter()
            .map(|e| e.verify_from_store().expect("stored event checks"))
            .collect();
        let thread = Thread::restore(events).expect("restores");
        let (n_events, heads) = store
            .heads(&ScopeId::Thread(thread_id))
            .expect("heads read")
            .expect("heads stored");
        assert_eq!(n_events, thread.dag().len() as u64, "thread {thread_id}");
        assert_eq!(
            heads,
            thread.dag().heads().iter().copied().collect::<Vec<_>>(),
            "thread {thread_id}"
        );
        // The record holds all of the state but the maps that grow with the thread, which
        // the full state folds from the log.
        let mut bounded = thread.fold_from_scratch();
        assert!(!bounded.receipts.is_empty(), "receipts were folded");
        bounded.receipts.clear();
        bounded.erased.clear();
        assert_eq!(stored_state, bounded, "thread {thread_id}");
        assert_eq!(
            store
                .full_thread_state(&thread_id)
                .expect("folds")
                .expect("thread"),
            thread.fold_from_scratch(),
            "thread {thread_id}"
        );
        assert_eq!(thread.state(), &thread.fold_from_scratch());
        // The thread list's facts agree with the log: unread counts in the log's order, the
        // customer's last message on each channel.
        let facts = store
            .thread_facts(&thread_id)
            .expect("facts read")
            .expect("facts kept");
        let mark = thread
            .state()
            .read_marks
            .get(&threadline_protocol::thread::Reader::Agent(agent))
            .copied();
        let mut past_mark = mark.is_none();
        let mut unread = 0;
        let mut last_inbound = None;
        for event in thread.dag().iter_ordered() {
            if let EventKind::Thread(ThreadKind::Message {
                direction: threadline_protocol::event::Direction::Inbound { .. },
            }) = event.header().kind
            {
                last_inbound = last_inbound.max(Some(event.header().author_time));
                if past_mark {
                    unread += 1;
                }
            }
            if Some(event.id()) == mark {
                past_mark = true;
            }
        }
        assert_eq!(facts.unread(agent), unread, "thread {thread_id}");
        assert_eq!(
            facts.last_inbound.get(&ChannelKind::Webchat).copied(),
            last_inbound
        );
        if mark.is_some() {
            assert!(unread < 15, "a read thread has fewer unread than messages");
        }
        n_threads += 1;
    }
    assert_eq!(n_threads, 20);
    let directory_events: Vec<_> = store
        .log_events(&ScopeId::Directory(identity.org))
        .expect("log reads")
        .into_iter()
        .map(|e| e.verify_from_store().expect("checks"))
        .collect();
    let directory = Directory::restore(directory_events).expect("restores");
    assert_eq!(directory.state(), &directory.fold_from_scratch());
    assert_eq!(directory.state().contacts.len(), 20);
    let (n_events, heads) = store
        .heads(&ScopeId::Directory(identity.org))
        .expect("heads read")
        .expect("heads stored");
    assert_eq!(n_events, directory.dag().len() as u64);
    assert_eq!(
        heads,
        directory.dag().heads().iter().copied().collect::<Vec<_>>()
    );
    // Every event of every log was stored once: 20 × (15 messages + 3 replies + 3 receipts +
    // 4 labels + opening) + 7 status changes + 10 reads, and the directory's genesis, 2
    // certificates and 20 × 2 contact events.
    assert_eq!(
        store.n_events(),
        20 * (15 + 3 + 3 + 4 + 1) + 7 + 10 + 3 + 40
    );
}

/// The writer's cache keeps threads' headers, not their contents (those are in the store): a
/// thread it reloads after a restart still has every content stored, its replies go to the
/// handle the route names, and erasing the contact still erases every content of the thread.
#[test]
fn a_thread_reloaded_without_contents_delivers_to_its_route_and_erases_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = DataDir::new(tmp.path().join("data"));
    let initialised = admin::init(&data_dir, clock::now()).expect("init");
    let agent = initialised.first_agent.agent.id;
    let bridge = admin::add_bridge(&data_dir, ChannelKind::Webchat, clock::now()).expect("bridge");
    let identity = data_dir.load_identity().expect("identity");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let handle: Handle = "webchat:visitor-7".parse().expect("handle");
    let reply = |text: &str| ingest::Action::Reply {
        text: text.to_owned(),
        attachments: Vec::new(),
        reply_to: None,
    };

    let run = |messages: std::ops::Range<usize>, answer: &str| {
        let store = open_when_released(&data_dir);
        let (pipeline, running) =
            ingest::start(store.clone(), identity.clone(), clock::now).expect("start");
        let thread = runtime.block_on(async {
            let mut thread = None;
            for message in messages {
                let resolved = pipeline.resolve(handle.clone()).await.expect("resolves");
                let event = inbound(
                    &resolved,
                    &handle,
                    &format!("message {message}"),
                    &format!("m{message}"),
                    &bridge.key,
                );
                let results = pipeline.submit(vec![event]).await;
                assert!(matches!(results[0], Ok(ingest::Submitted::Stored(_))));
                thread = Some(resolved.thread);
            }
            let thread = thread.expect("a message");
            pipeline
                .act(agent, thread, reply(answer))
                .await
                .expect("reply");
            thread
        });
        drop(pipeline);
        running.join();
        (store, thread)
    };

    let (store, thread) = run(0..5, "first answer");
    drop(store);
    // After a restart the writer loads the thread from the store (its cache starts empty).
    let (store, again) = run(5..8, "second answer");
    assert_eq!(thread, again);
    let texts: Vec<Option<String>> = store
        .log_events(&ScopeId::Thread(thread))
        .expect("log reads")
        .into_iter()
        .map(|event| event.content.map(|content| content.text))
        .collect();
    for expected in (0..8)
        .map(|m| format!("message {m}"))
        .chain(["first answer".to_owned(), "second answer".to_owned()])
    {
        assert!(
            texts.contains(&Some(expected.clone())),
            "{expected} is stored: {texts:?}"
        );
    }
    let queued = store.deliveries(ChannelKind::Webchat, 10).expect("queue");
    assert_eq!(
        queued
            .iter()
            .map(|d| (d.text.as_str(), d.handle.clone()))
            .collect::<Vec<_>>(),
        [
            ("first answer", handle.clone()),
            ("second answer", handle.clone())
        ]
    );

    // Erase the contact from a cold cache: every content of the thread goes.
    let contact = store
        .thread_state(&thread)
        .expect("reads")
        .expect("state")
        .contact;
    drop(store);
    let store = open_when_released(&data_dir);
    let (pipeline, running) = ingest::start(store.clone(), identity, clock::now).expect("start");
    runtime
        .block_on(pipeline.change_directory(ingest::DirectoryAction::Erase(contact)))
        .expect("erases");
    drop(pipeline);
    running.join();
    let left: Vec<String> = store
        .log_events(&ScopeId::Thread(thread))
        .expect("log reads")
        .into_iter()
        .filter_map(|event| event.content.map(|content| content.text))
        .collect();
    assert!(left.is_empty(), "content left after the erase: {left:?}");
}
