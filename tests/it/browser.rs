//! The web chat in a real browser (headless Chromium over WebDriver): a visitor writes from
//! the demo page, an agent answers, the visitor sees it, reloads, and the history is back,
//! also after the node restarts; a second visitor never sees the first one's conversation.
//! Screenshots go to `target/screenshots/`.

use serde_json::{json, Value};
use threadline_tests::{field, screenshot_dir, threadline_ok, Browser, Node};

/// The texts of the chat bubbles, `visitor: ...` / `agent: ...`, once none is pending.
const BUBBLES: &str = r#"
    const items = [...document.querySelectorAll('.tl-chat-msg')];
    if (items.some(i => i.classList.contains('tl-pending'))) return null;
    return items.map(i => (i.classList.contains('tl-agent') ? 'agent: ' : 'visitor: ')
        + i.querySelector('.tl-chat-text').textContent);
"#;

pub(crate) fn write(browser: &Browser, text: &str) {
    let input = browser.find(".tl-chat-input");
    browser.type_into(&input, text);
    browser.type_into(&input, "\u{E007}");
}

pub(crate) fn open_chat(browser: &Browser) {
    browser.wait_for(
        "the widget",
        "return document.querySelector('.tl-chat-launcher')",
    );
    browser.click_on(".tl-chat-launcher");
    browser.wait_for(
        "the chat to connect",
        "return document.querySelector('.tl-chat').dataset.state === 'connected'",
    );
}

/// An agent's browser at `base`'s inbox, signed in with `token`, with the first conversation
/// of the list open.
pub(crate) fn open_first_conversation(base: &str, token: &str) -> Browser {
    let agent = Browser::start();
    agent.go(&format!("{base}/inbox"));
    agent.wait_for(
        "the sign-in form",
        "return document.getElementById('token')",
    );
    let input = agent.find("#token");
    agent.type_into(&input, &format!("{token}\u{E007}"));
    agent.wait_for(
        "the inbox with a conversation",
        "return !document.getElementById('app').hidden && document.querySelector('.thread-item')",
    );
    agent.click_on(".thread-item");
    agent
}

fn bubbles_when(browser: &Browser, what: &str, count: usize) -> Vec<String> {
    let script = format!(
        "const b = (function() {{ {BUBBLES} }})(); return b && b.length >= {count} ? b : null;"
    );
    let value = browser.wait_for(what, &script);
    serde_json::from_value(value).expect("strings")
}

#[test]
fn a_visitor_chats_from_a_web_page_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let demo = format!("{}/webchat/demo", node.base);
    let shots = screenshot_dir();

    let visitor = Browser::start();
    visitor.go(&demo);
    open_chat(&visitor);
    let status = visitor.run(
        "return document.querySelector('.tl-chat-status').textContent",
        json!([]),
    );
    assert!(
        status.as_str().is_some_and(|s| s.contains("away")),
        "no agent has the inbox open: {status}"
    );
    write(&visitor, "Hi! Do you have the Trail 2 tent in green?");
    assert_eq!(
        bubbles_when(&visitor, "the message to be stored", 1),
        ["visitor: Hi! Do you have the Trail 2 tent in green?"]
    );
    // Nobody at the inbox: the widget offers to answer by email too.
    visitor.wait_for(
        "the email offer",
        "return !document.querySelector('.tl-chat-email').hidden",
    );
    visitor.screenshot(&shots.join("webchat-away.png"));
    let email = visitor.find(".tl-chat-email input");
    visitor.type_into(&email, "dana@example.test\u{E007}");
    visitor.wait_for(
        "the email to be saved",
        "return document.querySelector('.tl-chat-email-done').textContent.includes('dana@example.test')",
    );

    // The agent finds the thread and answers; the visitor sees it without reloading.
    let (_, list) = node.get(&token, "/api/v1/threads?channel=webchat");
    let thread = list["threads"][0]["id"]
        .as_str()
        .expect("a web chat thread")
        .to_owned();
    let (status, _) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "We do! Shall I reserve one for you?"}),
    );
    assert_eq!(status, 200);
    let expected = [
        "visitor: Hi! Do you have the Trail 2 tent in green?",
        "agent: We do! Shall I reserve one for you?",
    ];
    assert_eq!(bubbles_when(&visitor, "the reply", 2), expected);
    visitor.screenshot(&shots.join("webchat-conversation.png"));

    // The reply is marked read once the visitor has seen it (the panel is open).
    let read = (0..100).any(|_| {
        let (_, detail) = node.get(&token, &format!("/api/v1/threads/{thread}"));
        let found = detail["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e: &Value| e["kind"] == "thread.receipt" && e["detail"]["receipt"] == "read")
        });
        if !found {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        found
    });
    assert!(read, "the reply was marked read");

    // Reload: same browser, same conversation.
    visitor.reload();
    open_chat(&visitor);
    assert_eq!(
        bubbles_when(&visitor, "the history after a reload", 2),
        expected
    );

    // Restart the node: nothing is lost; the widget reconnects by itself.
    let address = node.base.trim_start_matches("http://").to_owned();
    node.stop();
    let node = Node::start_at(&data, &address);
    visitor.go(&demo);
    open_chat(&visitor);
    assert_eq!(
        bubbles_when(&visitor, "the history after a restart", 2),
        expected
    );

    // Another visitor (another browser profile) starts from nothing and sees only their own.
    let other = Browser::start();
    other.go(&demo);
    open_chat(&other);
    let empty = other.run(
        "return document.querySelectorAll('.tl-chat-msg').length",
        json!([]),
    );
    assert_eq!(empty, json!(0));
    write(&other, "Hello, I am someone else");
    assert_eq!(
        bubbles_when(&other, "the second visitor's message", 1),
        ["visitor: Hello, I am someone else"]
    );
    other.screenshot(&shots.join("webchat-second-visitor.png"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        bubbles_when(&visitor, "the first visitor's page", 2),
        expected
    );
    node.stop();
}

#[test]
fn an_agent_answers_from_the_inbox_while_the_visitor_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let shots = screenshot_dir();

    // The agent signs in first: the inbox is empty and listening.
    let agent = Browser::start();
    agent.go(&format!("{}/inbox", node.base));
    agent.wait_for(
        "the sign-in form",
        "return document.getElementById('token')",
    );
    let bad = agent.find("#token");
    agent.type_into(&bad, "thl_not-a-token\u{E007}");
    agent.wait_for(
        "the refusal",
        "return document.getElementById('signin-error').textContent.includes('not valid')",
    );
    let input = agent.find("#token");
    agent.run("document.getElementById('token').value = ''", json!([]));
    agent.type_into(&input, &format!("{token}\u{E007}"));
    agent.wait_for(
        "the inbox",
        "return !document.getElementById('app').hidden && document.getElementById('live').classList.contains('on')",
    );

    // A visitor writes; the thread appears in the inbox without a reload, with an unread badge.
    let visitor = Browser::start();
    visitor.go(&format!("{}/webchat/demo", node.base));
    open_chat(&visitor);
    assert_eq!(
        visitor.run(
            "return document.querySelector('.tl-chat-status').textContent",
            json!([])
        ),
        json!("We reply here"),
        "an agent is at the inbox"
    );
    write(&visitor, "My order 1042 has not arrived");
    bubbles_when(&visitor, "the message to be stored", 1);
    let badge = agent.wait_for(
        "the new thread, live",
        "const b = document.querySelector('.thread-item .badge'); return b && b.textContent",
    );
    assert_eq!(badge, json!("1"));

    // Open it, see the message and the contact, answer with the keyboard.
    agent.click_on(".thread-item");
    agent.wait_for(
        "the conversation",
        "return [...document.querySelectorAll('#events .event.inbound')].some(e => e.textContent.includes('order 1042'))",
    );
    agent.wait_for(
        "the contact panel",
        "return document.querySelectorAll('#contact-handles li').length === 1",
    );
    // The visitor sees that the agent has read the message.
    visitor.wait_for(
        "the seen mark",
        "return document.querySelector('.tl-chat-msg.tl-visitor.tl-seen')",
    );
    // Typing shows on the other side, both ways.
    let visitor_input = visitor.find(".tl-chat-input");
    visitor.type_into(&visitor_input, "Also");
    agent.wait_for(
        "the customer typing",
        "return !document.getElementById('customer-typing').hidden",
    );
    visitor.run(
        "document.querySelector('.tl-chat-input').value = ''",
        json!([]),
    );
    agent.run("document.activeElement.blur()", json!([]));
    agent.click_on("#compose");
    let compose = agent.find("#compose");
    agent.type_into(&compose, "Sorry about that! It left our warehouse today.");
    visitor.wait_for(
        "the agent typing",
        "return !document.querySelector('.tl-chat-typing').hidden",
    );
    agent.run(
        "document.getElementById('compose').dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', ctrlKey: true, bubbles: true}))",
        json!([]),
    );
    assert_eq!(
        bubbles_when(&visitor, "the agent's answer", 2),
        [
            "visitor: My order 1042 has not arrived",
            "agent: Sorry about that! It left our warehouse today."
        ]
    );

    // An internal note stays internal; the status change shows in the conversation.
    agent.click_on("#mode-note");
    let compose = agent.find("#compose");
    agent.type_into(&compose, "Check with the carrier tomorrow");
    agent.click_on("#send");
    agent.wait_for(
        "the note",
        "return [...document.querySelectorAll('#events .event.note')].some(e => e.textContent.includes('carrier'))",
    );
    agent.wait_for(
        "the receipt on the reply",
        "return [...document.querySelectorAll('#events .event.outbound .meta')].some(m => /delivered|read/.test(m.textContent))",
    );
    agent.screenshot(&shots.join("inbox-conversation.png"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        bubbles_when(&visitor, "the visitor's page", 2).len(),
        2,
        "the note never reaches the visitor"
    );
    node.stop();
}

/// Serves `page` (HTML) to every request on a free loopback port, from a thread of its own:
/// another site than the node's. Returns its origin.
fn serve_page(page: String) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let origin = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    origin
}

#[test]
fn a_widget_on_a_site_not_allowed_says_so_and_the_node_names_the_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    threadline_ok(&data, &["init"]);
    let address = format!("127.0.0.1:{}", threadline_tests::free_port());
    let node = Node::start_at(&data, &address);
    let site = serve_page(format!(
        "<!doctype html><title>Shop</title><h1>Shop</h1><script src=\"{}/webchat/widget.js\"></script>",
        node.base
    ));
    let visitor = Browser::start();
    visitor.go(&format!("{site}/"));
    visitor.wait_for(
        "the widget",
        "return document.querySelector('.tl-chat-launcher')",
    );
    visitor.click_on(".tl-chat-launcher");
    let status = visitor.wait_for(
        "the chat to say it cannot open here",
        "const c = document.querySelector('.tl-chat'); return c.dataset.state === 'not-allowed' && document.querySelector('.tl-chat-status').textContent",
    );
    assert_eq!(status, json!("Chat is not available on this site"));
    assert_eq!(
        visitor.run(
            "return document.querySelector('.tl-chat-input').disabled",
            json!([])
        ),
        json!(true)
    );
    visitor.screenshot(&screenshot_dir().join("webchat-site-not-allowed.png"));
    // The node says which site was refused, and how to allow it (once per site).
    let logged = threadline_tests::eventually(
        "the refusal in the log",
        std::time::Duration::from_secs(5),
        || {
            let lines = node.logged(&[&site, "allowed_origins"]);
            (!lines.is_empty()).then_some(lines)
        },
    );
    assert_eq!(logged.len(), 1, "{logged:?}");
    node.stop();

    // Allowed, the same page chats.
    threadline_tests::edit_config(&data, |text| {
        text.replace(
            "allowed_origins = []",
            &format!("allowed_origins = [\"{site}\"]"),
        )
    });
    let node = Node::start_at(&data, &address);
    visitor.go(&format!("{site}/"));
    open_chat(&visitor);
    write(&visitor, "Hello from the shop's site");
    bubbles_when(&visitor, "the message stored", 1);
    node.stop();
}

/// Where an element is on the screen: `{top, bottom, left, right}` of its bounding box, with
/// the viewport's `width` and `height`.
const GEOMETRY: &str = r#"
    const box = document.querySelector(arguments[0]).getBoundingClientRect();
    return {top: box.top, bottom: box.bottom, left: box.left, right: box.right,
            width: window.innerWidth, height: window.innerHeight};
"#;

fn geometry(browser: &Browser, css: &str) -> Value {
    browser.run(GEOMETRY, json!([css]))
}

fn on_screen(browser: &Browser, css: &str, width: u32) {
    let at = geometry(browser, css);
    let (top, bottom) = (at["top"].as_f64(), at["bottom"].as_f64());
    let (left, right) = (at["left"].as_f64(), at["right"].as_f64());
    let (w, h) = (at["width"].as_f64(), at["height"].as_f64());
    assert!(
        matches!((top, bottom, left, right, w, h), (Some(t), Some(b), Some(l), Some(r), Some(w), Some(h))
            if t >= -0.5 && b <= h + 0.5 && l >= -0.5 && r <= w + 0.5 && b > t && r > l),
        "{css} is not wholly on screen at {width} px: {at}"
    );
}

/// The newest event is wholly inside the message pane (not under its edge).
fn newest_in_view(browser: &Browser, width: u32) {
    let inside = browser.wait_for(
        "the newest message in view",
        "const pane = document.getElementById('events').getBoundingClientRect();
         const last = document.querySelector('#events .event:last-child').getBoundingClientRect();
         return last.top >= pane.top - 0.5 && last.bottom <= pane.bottom + 0.5 ? 'yes' : null",
    );
    assert_eq!(inside, json!("yes"), "at {width} px");
}

#[test]
fn the_inbox_works_at_1280_1024_and_390_pixels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let mut visitor = threadline_tests::Visitor::connect(&node, None);
    for n in 1..=20 {
        visitor.say(
            &format!("m{n}"),
            &format!("Message number {n} about my order"),
        );
    }
    let agent = open_first_conversation(&node.base, &token);
    let shots = screenshot_dir();
    for width in [1280, 1024, 390] {
        agent.resize(width, 800);
        agent.wait_for(
            "the newest message",
            "return [...document.querySelectorAll('#events .event.inbound')].some(e => e.textContent.includes('number 10'))",
        );
        // It opens at the newest message, in a pane that scrolls by itself, with the composer
        // on screen.
        let scrolls = agent.run(
            "const e = document.getElementById('events'); return e.scrollHeight > e.clientHeight",
            json!([]),
        );
        assert_eq!(
            scrolls,
            json!(true),
            "at {width} px the messages scroll in their pane"
        );
        newest_in_view(&agent, width);
        on_screen(&agent, "#compose", width);
        on_screen(&agent, "#status", width);
        on_screen(&agent, "#send", width);
        let overflow = agent.run(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            json!([]),
        );
        assert_eq!(
            overflow,
            json!(true),
            "nothing sticks out sideways at {width} px"
        );
        if width >= 1024 {
            on_screen(&agent, ".contact", width);
            on_screen(&agent, ".threads", width);
        } else {
            // A phone: the conversation fills the screen; back shows the list, which fills it.
            on_screen(&agent, "#back", width);
            agent.screenshot(&shots.join(format!("inbox-{width}-conversation.png")));
            agent.click_on("#back");
            on_screen(&agent, ".thread-item", width);
            let list = geometry(&agent, ".threads");
            assert!(
                list["right"].as_f64().unwrap_or(0.0) - list["left"].as_f64().unwrap_or(0.0)
                    >= f64::from(width) - 2.0,
                "the list fills the phone: {list}"
            );
            agent.screenshot(&shots.join(format!("inbox-{width}-list.png")));
            agent.click_on(".thread-item");
            on_screen(&agent, "#compose", width);
        }
        agent.screenshot(&shots.join(format!("inbox-{width}.png")));
    }
    // Typing a reply on the phone works as on a computer.
    agent.click_on("#compose");
    let compose = agent.find("#compose");
    agent.type_into(&compose, "We are on it");
    agent.click_on("#send");
    agent.wait_for(
        "the reply",
        "return [...document.querySelectorAll('#events .event.outbound')].some(e => e.textContent.includes('We are on it'))",
    );
    newest_in_view(&agent, 390);
    // The contact panel takes the conversation's place on the phone, and gives it back.
    agent.click_on("#show-contact");
    agent.wait_for(
        "the contact panel",
        "return getComputedStyle(document.querySelector('.contact')).display !== 'none' && getComputedStyle(document.querySelector('.thread')).display === 'none'",
    );
    on_screen(&agent, "#contact-name", 390);
    on_screen(&agent, "#rename", 390);
    agent.screenshot(&shots.join("inbox-390-contact.png"));
    agent.click_on("#contact-back");
    agent.wait_for(
        "the conversation again",
        "return getComputedStyle(document.querySelector('.contact')).display === 'none' && getComputedStyle(document.querySelector('.thread')).display !== 'none'",
    );
    on_screen(&agent, "#compose", 390);
    node.stop();
}

/// Picks `value` in the `<select>` matching `css`, as a person does (the page hears `change`).
fn choose(browser: &Browser, css: &str, value: &str) {
    browser.run(
        "const s = document.querySelector(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change'));",
        json!([css, value]),
    );
}

#[test]
fn an_agent_assigns_to_anyone_snoozes_and_filters_by_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let bea = field(&threadline_ok(&data, &["agent", "add", "Bea"]), "agent:");
    let bea_id = bea.split_whitespace().next().expect("id").to_owned();
    let node = Node::start(&data);
    for who in ["first", "second"] {
        let mut visitor = threadline_tests::Visitor::connect(&node, None);
        let said = visitor.say("m1", &format!("Hello from the {who} visitor"));
        assert_eq!(said["type"], "ack", "{said}");
    }
    let agent = open_first_conversation(&node.base, &token);
    let thread = agent
        .wait_for(
            "the conversation",
            "const s = document.querySelector('.thread-item.selected'); return s && s.dataset.thread",
        )
        .as_str()
        .expect("thread id")
        .to_owned();
    // Assigned to Bea, not only to "me".
    agent.wait_for(
        "Bea in the assignee picker",
        &format!("return !!document.querySelector('#assignee option[value=\"{bea_id}\"]')"),
    );
    choose(&agent, "#assignee", &bea_id);
    agent.wait_for(
        "the assignment",
        "return document.getElementById('thread-meta').textContent.includes('assigned to Bea')",
    );
    // Labelled, and the list filtered by the label from the label itself.
    let input = agent.find("#label-input");
    agent.type_into(&input, "billing\u{E007}");
    agent.wait_for(
        "the label",
        "return [...document.querySelectorAll('#labels .chip-name')].some(c => c.textContent === 'billing')",
    );
    agent.click_on("#labels .chip-name");
    agent.wait_for(
        "the list of billing conversations",
        "return document.getElementById('list-title').textContent === 'Open · billing' && document.querySelectorAll('.thread-item').length === 1",
    );
    agent.run(
        "const f = document.getElementById('label-filter'); f.value = ''; f.dispatchEvent(new Event('change'));",
        json!([]),
    );
    agent.wait_for(
        "both conversations again",
        "return document.querySelectorAll('.thread-item').length === 2",
    );
    // Snoozed: out of Open, in its own filter, saying until when.
    choose(&agent, "#status", "snooze-4h");
    agent.wait_for(
        "the thread out of Open",
        &format!("return !document.querySelector('.thread-item[data-thread=\"{thread}\"]')"),
    );
    // Each filter counts its conversations: one open, one snoozed, none of them the admin's.
    agent.wait_for(
        "the counts on the filters",
        "const n = f => document.querySelector(`[data-filter=${f}] .count`).textContent; return n('open') === '1' && n('snoozed') === '1' && n('all') === '2' && n('mine') === '' && n('unassigned') === '1'",
    );
    let (_, mut counts) = node.get(&token, "/api/v1/threads/counts?label=billing");
    let unread = counts
        .as_object_mut()
        .and_then(|c| c.remove("unread"))
        .expect("unread counts");
    assert_eq!(
        counts,
        json!({"mine": 0, "unassigned": 0, "open": 0, "pending": 0, "snoozed": 1, "resolved": 0, "all": 1, "teams": {}})
    );
    assert!(unread["all"].as_u64().is_some_and(|n| n <= 1), "{unread}");
    agent.click_on("[data-filter=snoozed]");
    agent.wait_for(
        "the thread under Snoozed",
        &format!("return document.getElementById('list-title').textContent === 'Snoozed' && !!document.querySelector('.thread-item[data-thread=\"{thread}\"]')"),
    );
    agent.click_on(&format!(".thread-item[data-thread=\"{thread}\"]"));
    agent.wait_for(
        "the snooze's end shown",
        "const s = document.getElementById('status'); return s.value === 'snoozed' && s.selectedOptions[0].textContent.startsWith('Snoozed until')",
    );
    on_screen(&agent, "#status", 1280);
    on_screen(&agent, "#assignee", 1280);
    agent.screenshot(&screenshot_dir().join("inbox-assign-label-snooze.png"));
    let (_, shown) = node.get(&token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(shown["thread"]["status"], "snoozed");
    assert_eq!(shown["thread"]["assignee"], bea_id.as_str());
    assert_eq!(shown["thread"]["labels"], json!(["billing"]));
    node.stop();
}

#[test]
fn an_agent_renames_a_contact_edits_details_links_a_handle_and_merges_with_the_evidence_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    // Maria wrote by email before (a contact with her address as a handle)...
    let mut earlier = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(earlier.say("m1", "Order 1234 is late")["type"], "ack");
    let threads = threadline_tests::threads(&node, &token);
    let by_mail = threads[0]["contact"].as_str().expect("contact").to_owned();
    let (status, _) = node.post(
        &token,
        &format!("/api/v1/contacts/{by_mail}/handles"),
        &json!({"handle": "email:maria@example.com"}),
    );
    assert_eq!(status, 200);
    // ...and now chats on the site, leaving the same address in the widget.
    let mut visitor = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(visitor.say("m1", "Any news on my order?")["type"], "ack");
    visitor.send(&json!({"type": "email", "address": "maria@example.com"}));
    assert_eq!(visitor.receive().expect("answer")["type"], "email_saved");
    let agent = open_first_conversation(&node.base, &token);
    agent.wait_for(
        "the visitor's record",
        "return document.getElementById('contact-attributes').textContent.includes('maria@example.com')",
    );
    // Each conversation in the list shows its last message.
    agent.wait_for(
        "the previews",
        "const p = [...document.querySelectorAll('.thread-item .preview')].map(p => p.textContent); return p.includes('Any news on my order?') && p.includes('Order 1234 is late')",
    );
    let visitor_contact = agent
        .run(
            "const s = document.querySelector('.thread-item.selected'); return s && s.dataset.thread",
            json!([]),
        )
        .as_str()
        .map(|thread| {
            threadline_tests::detail(&node, &token, thread)["thread"]["contact"]
                .as_str()
                .expect("contact")
                .to_owned()
        })
        .expect("a selected thread");
    assert_ne!(visitor_contact, by_mail);

    // Renamed: the panel and the list say so.
    agent.click_on("#rename");
    let name = agent.find("#rename-input");
    agent.run(
        "document.getElementById('rename-input').value = ''",
        json!([]),
    );
    agent.type_into(&name, "Maria Lopez\u{E007}");
    agent.wait_for(
        "the new name in the panel, the conversation's title and the list",
        "return document.getElementById('contact-name').textContent === 'Maria Lopez' && document.getElementById('rename-form').hidden && document.getElementById('thread-title').textContent === 'Maria Lopez' && [...document.querySelectorAll('.thread-item')].some(i => i.textContent.includes('Maria Lopez'))",
    );
    // A detail set, then removed.
    let key = agent.find("#attribute-key");
    agent.type_into(&key, "plan");
    let value = agent.find("#attribute-value");
    agent.type_into(&value, "pro\u{E007}");
    agent.wait_for(
        "the detail",
        "return [...document.querySelectorAll('#contact-attributes dt')].some(d => d.textContent === 'plan')",
    );
    agent.click_on("#contact-attributes .attr-remove[data-key=plan]");
    agent.wait_for(
        "the detail gone",
        "return ![...document.querySelectorAll('#contact-attributes dt')].some(d => d.textContent === 'plan')",
    );
    // A handle linked; a bad one refused with the reason, nothing linked.
    choose(&agent, "#link-channel", "sms");
    let address = agent.find("#link-address");
    agent.type_into(&address, "not a number\u{E007}");
    agent.wait_for(
        "the refusal",
        "return document.getElementById('contact-error').textContent.includes('handle')",
    );
    agent.run(
        "document.getElementById('link-address').value = ''",
        json!([]),
    );
    agent.type_into(&address, "+15550100\u{E007}");
    agent.wait_for(
        "the linked handle",
        "return document.getElementById('contact-handles').textContent.includes('sms:+15550100') && document.getElementById('contact-error').textContent === ''",
    );
    let (_, record) = node.get(&token, &format!("/api/v1/contacts/{visitor_contact}"));
    assert_eq!(record["display_name"], "Maria Lopez");
    assert_eq!(record["attributes"].get("plan"), None);
    assert_eq!(
        record["handles"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );

    // The earlier contact found, the evidence shown, then merged into this one.
    let search = agent.find("#merge-search");
    agent.type_into(&search, "maria@example.com");
    agent.wait_for(
        "the other contact in the results",
        &format!("return !!document.querySelector('#merge-results [data-contact=\"{by_mail}\"]')"),
    );
    agent.click_on(&format!("#merge-results [data-contact=\"{by_mail}\"]"));
    let evidence = agent.wait_for(
        "the evidence",
        "const e = [...document.querySelectorAll('#merge-evidence .evidence')].map(l => l.textContent); return !document.getElementById('merge-preview').hidden && e.length ? e : null",
    );
    assert_eq!(
        evidence,
        json!(["This contact's “unverified email” is maria@example.com, a handle of the other contact (email:maria@example.com)."]),
    );
    on_screen(&agent, "#merge-confirm", 1280);
    agent.screenshot(&screenshot_dir().join("inbox-contact-merge.png"));
    agent.click_on("#merge-confirm");
    agent.wait_for(
        "the merged record",
        "return document.getElementById('merge-preview').hidden && document.getElementById('contact-handles').textContent.includes('email:maria@example.com')",
    );
    let (_, record) = node.get(&token, &format!("/api/v1/contacts/{visitor_contact}"));
    assert_eq!(record["merged_from"], json!([by_mail]));
    let texts: Vec<&str> = record["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"Order 1234 is late") && texts.contains(&"Any news on my order?"),
        "{texts:?}"
    );
    drop(earlier);
    node.stop();
}

/// Notes in the page every desktop notification it shows and every tone it plays, through
/// the browser's own `Notification` and `AudioContext` (still shown and played).
const NOTE_ALERTS: &str = "window.shown = []; window.tones = 0;
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) { super(title, options); window.shown.push([title, options.body]); }
};
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) { window.tones += 1; return start.apply(this, args); };";

#[test]
fn an_agent_is_notified_of_new_conversations_and_of_messages_on_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let mut first = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(first.say("m1", "Hello")["type"], "ack");
    let agent = open_first_conversation(&node.base, &token);
    agent.allow_notifications();
    agent.run(NOTE_ALERTS, json!([]));
    agent.click_on("#notify");
    agent.wait_for(
        "notifications on, allowed",
        "return document.getElementById('notify').getAttribute('aria-pressed') === 'true' && Notification.permission === 'granted'",
    );
    let (_, me) = node.get(&token, "/api/v1/me");
    // A new conversation: a notification with its first words, and a tone.
    let mut second = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(second.say("m1", "I was charged twice")["type"], "ack");
    let shown = agent.wait_for(
        "the new conversation's notification",
        "return window.shown.length === 1 && window.tones === 1 ? window.shown : null",
    );
    assert!(
        shown[0][0]
            .as_str()
            .is_some_and(|title| title.starts_with("New conversation: ")),
        "{shown}"
    );
    assert_eq!(shown[0][1], "I was charged twice");
    // A message in a conversation that is not new and not the agent's: nothing.
    assert_eq!(second.say("m2", "Hello?")["type"], "ack");
    // A message in the conversation on screen: nothing either.
    assert_eq!(first.say("m2", "Still there?")["type"], "ack");
    // Assigned to the agent, the second conversation's next message notifies.
    let threads = threadline_tests::threads(&node, &token);
    let second_thread = threads
        .iter()
        .find(|t| t["last_message"]["text"] == "Hello?")
        .expect("the second conversation")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _) = node.post(
        &token,
        &format!("/api/v1/threads/{second_thread}/assign"),
        &json!({"assignee": me["id"]}),
    );
    assert_eq!(status, 200);
    assert_eq!(second.say("m3", "Any update?")["type"], "ack");
    let shown = agent.wait_for(
        "the notification for a message on the agent's conversation",
        "return window.shown.length >= 2 ? window.shown : null",
    );
    assert_eq!(shown.as_array().map(Vec::len), Some(2), "{shown}");
    assert_eq!(shown[1][1], "Any update?");
    assert!(
        !shown[1][0]
            .as_str()
            .is_some_and(|title| title.starts_with("New conversation")),
        "{shown}"
    );
    assert_eq!(agent.run("return window.tones", json!([])), json!(2));
    // Turned off: nothing more, and it stays off after a reload.
    agent.click_on("#notify");
    assert_eq!(second.say("m4", "Hello again")["type"], "ack");
    agent.wait_for(
        "the list updated",
        "return [...document.querySelectorAll('.thread-item .preview')].some(p => p.textContent === 'Hello again')",
    );
    assert_eq!(agent.run("return window.shown.length", json!([])), json!(2));
    agent.reload();
    agent.wait_for(
        "notifications still off",
        "return document.getElementById('notify').getAttribute('aria-pressed') === 'false'",
    );
    node.stop();
}

#[test]
fn an_agent_saves_a_canned_reply_and_inserts_it_with_a_shortcode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let mut visitor = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(visitor.say("m1", "Where is my refund?")["type"], "ack");
    let agent = open_first_conversation(&node.base, &token);
    // The contact has a name, which the reply fills in.
    let contact = agent
        .wait_for(
            "the contact panel",
            "return !document.getElementById('contact-view').hidden && document.getElementById('contact-name').textContent",
        )
        .as_str()
        .map(str::to_owned);
    assert!(contact.is_some());
    agent.click_on("#rename");
    agent.run(
        "document.getElementById('rename-input').value = ''",
        json!([]),
    );
    let name = agent.find("#rename-input");
    agent.type_into(&name, "Ines\u{E007}");
    agent.wait_for(
        "the name",
        "return document.getElementById('contact-name').textContent === 'Ines'",
    );
    // Saved in the dialog; a bad shortcode is refused with the reason.
    agent.click_on("#canned-open");
    let code = agent.find("#canned-shortcode");
    agent.type_into(&code, "Bad Code");
    let text = agent.find("#canned-text");
    agent.type_into(
        &text,
        "Hi {contact.name}, your refund left today. {agent.name}",
    );
    agent.run(
        "document.getElementById('canned-form').requestSubmit()",
        json!([]),
    );
    agent.wait_for(
        "the refusal",
        "return document.getElementById('canned-error').textContent.includes('bad shortcode')",
    );
    agent.run(
        "document.getElementById('canned-shortcode').value = 'refund'; document.getElementById('canned-form').requestSubmit()",
        json!([]),
    );
    agent.wait_for(
        "the saved reply",
        "return !!document.querySelector('#canned-list li[data-shortcode=refund]')",
    );
    agent.click_on("#canned-close");
    // "/ref" in the composer offers it; Enter inserts it, filled in.
    let compose = agent.find("#compose");
    agent.type_into(&compose, "/ref");
    agent.wait_for(
        "the menu",
        "const m = document.getElementById('canned-menu'); return !m.hidden && m.querySelector('li.active[data-shortcode=refund]')",
    );
    agent.type_into(&compose, "\u{E007}");
    let inserted = agent.wait_for(
        "the inserted text",
        "const v = document.getElementById('compose').value; return v.startsWith('Hi ') ? v : null",
    );
    assert_eq!(inserted, "Hi Ines, your refund left today. admin");
    assert_eq!(
        agent.run(
            "return document.getElementById('canned-menu').hidden",
            json!([])
        ),
        json!(true)
    );
    // Sent as written: the visitor gets it.
    agent.click_on("#send");
    let reply = loop {
        let frame = visitor.receive().expect("a frame");
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(reply["text"], "Hi Ines, your refund left today. admin");
    node.stop();
}

#[test]
fn the_widget_takes_the_title_greeting_colour_and_corner_the_operator_sets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    threadline_ok(&data, &["init"]);
    // A colour that is no colour: the node says which setting and does not start.
    threadline_tests::edit_config(&data, |text| {
        text.replace(
            "allowed_origins = []",
            "allowed_origins = []\ncolor = \"blue\"",
        )
    });
    let refused = threadline_tests::run_threadline(&data, &["run", "--listen", "127.0.0.1:0"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("webchat: color `blue` is not a colour like \"#2563eb\""),
        "{why}"
    );
    threadline_tests::edit_config(&data, |text| {
        text.replace(
            "color = \"blue\"",
            "title = \"Ask Trailhead\"\ngreeting = \"Questions about a tent? We answer in minutes.\"\ncolor = \"#0F766E\"\nposition = \"left\"",
        )
    });
    let node = Node::start(&data);
    let visitor = Browser::start();
    visitor.go(&format!("{}/webchat/demo", node.base));
    let look = visitor.wait_for(
        "the widget as set",
        "const root = document.querySelector('.tl-chat'); const t = document.querySelector('.tl-chat-title'); return root && t && t.textContent === 'Ask Trailhead' ? {launcher: getComputedStyle(document.querySelector('.tl-chat-launcher')).backgroundColor, left: root.getBoundingClientRect().left, width: window.innerWidth} : null",
    );
    assert_eq!(look["launcher"], "rgb(15, 118, 110)", "{look}");
    assert!(
        look["left"].as_f64().is_some_and(|left| left < 100.0),
        "in the left corner: {look}"
    );
    open_chat(&visitor);
    assert_eq!(
        visitor.run(
            "return document.querySelector('.tl-chat-empty').textContent",
            json!([])
        ),
        "Questions about a tent? We answer in minutes."
    );
    let panel = geometry(&visitor, ".tl-chat-panel");
    assert!(
        panel["left"].as_f64().is_some_and(|left| left >= 0.0),
        "the open panel is on screen: {panel}"
    );
    visitor.screenshot(&screenshot_dir().join("webchat-configured.png"));
    node.stop();
}

#[test]
fn an_admin_adds_and_revokes_agents_from_the_inbox_and_an_agent_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let mut visitor = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(visitor.say("m1", "Hello")["type"], "ack");
    let admin = open_first_conversation(&node.base, &token);
    admin.click_on("#agents-open");
    let name = admin.find("#agent-name");
    admin.type_into(&name, "Noor\u{E007}");
    let new_token = admin
        .wait_for(
            "the new agent's token",
            "const t = document.getElementById('agent-token'); return !t.hidden && t.dataset.token",
        )
        .as_str()
        .expect("token")
        .to_owned();
    let (status, noor) = node.get(&new_token, "/api/v1/me");
    assert_eq!(
        (status, &noor["name"], &noor["role"]),
        (200, &json!("Noor"), &json!("agent"))
    );
    let noor_id = noor["id"].as_str().expect("id").to_owned();
    // Noor signs in elsewhere: the inbox offers her no agent management.
    let agent = open_first_conversation(&node.base, &new_token);
    assert_eq!(
        agent.run(
            "return document.getElementById('agents-open').hidden",
            json!([])
        ),
        json!(true)
    );
    // Revoked from the admin's inbox: her token stops at once.
    admin.click_on(&format!(
        "#agents-list li[data-agent=\"{noor_id}\"] .revoke"
    ));
    admin.wait_for(
        "Noor revoked",
        &format!(
            "return !!document.querySelector('#agents-list li.revoked[data-agent=\"{noor_id}\"]')"
        ),
    );
    assert_eq!(node.get(&new_token, "/api/v1/me").0, 401);
    // The admin cannot demote themselves, the only admin: the reason shows.
    let (_, me) = node.get(&token, "/api/v1/me");
    let admin_id = me["id"].as_str().expect("id");
    choose(
        &admin,
        &format!("#agents-list li[data-agent=\"{admin_id}\"] .role"),
        "agent",
    );
    let shown = admin.wait_for(
        "the refusal",
        "const e = document.getElementById('agents-error').textContent; return e.length ? e : null",
    );
    assert!(
        shown.as_str().is_some_and(|e| e.contains("only admin")),
        "{shown}"
    );
    admin.screenshot(&screenshot_dir().join("inbox-agents.png"));
    node.stop();
}

#[test]
fn an_admin_makes_a_team_and_an_agent_gives_a_conversation_to_it_and_filters_by_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let bea = field(&threadline_ok(&data, &["agent", "add", "Bea"]), "agent:");
    let bea_id = bea.split_whitespace().next().expect("id").to_owned();
    let node = Node::start(&data);
    for who in ["first", "second"] {
        let mut visitor = threadline_tests::Visitor::connect(&node, None);
        assert_eq!(
            visitor.say("m1", &format!("Hello from the {who} visitor"))["type"],
            "ack"
        );
    }
    let admin = open_first_conversation(&node.base, &token);
    // The team, made in the Agents and teams dialog: a name and the agents ticked.
    admin.click_on("#agents-open");
    admin.wait_for(
        "a box for Bea",
        &format!("return !!document.querySelector('#team-members input[value=\"{bea_id}\"]')"),
    );
    admin.click_on(&format!("#team-members input[value=\"{bea_id}\"]"));
    let name = admin.find("#team-name");
    admin.type_into(&name, "billing\u{E007}");
    admin.wait_for(
        "the team listed with Bea",
        "const t = document.querySelector('#teams-list li[data-team=billing]'); return t && t.textContent.includes('Bea')",
    );
    admin.screenshot(&screenshot_dir().join("inbox-teams.png"));
    admin.run("document.getElementById('agents-close').click()", json!([]));
    let (_, teams) = node.get(&token, "/api/v1/teams");
    assert_eq!(
        teams["teams"],
        json!([{"name": "billing", "members": [bea_id]}])
    );
    // The open conversation goes to the team from its header.
    let thread = admin
        .wait_for(
            "the conversation",
            "const s = document.querySelector('.thread-item.selected'); return s && s.dataset.thread",
        )
        .as_str()
        .expect("thread id")
        .to_owned();
    admin.wait_for(
        "the team in the picker",
        "return !!document.querySelector('#team option[value=billing]')",
    );
    choose(&admin, "#team", "billing");
    admin.wait_for(
        "the team on the conversation",
        "return document.getElementById('thread-meta').textContent.includes('team billing')",
    );
    on_screen(&admin, "#team", 1280);
    // The team filter counts its open conversation and shows only it.
    admin.wait_for(
        "the team's count",
        "const o = document.querySelector('#team-filter option[value=billing]'); return o && o.textContent === 'billing (1 open)'",
    );
    choose(&admin, "#team-filter", "billing");
    admin.wait_for(
        "only the team's conversation",
        &format!("const items = document.querySelectorAll('.thread-item'); return items.length === 1 && items[0].dataset.thread === '{thread}'"),
    );
    admin.screenshot(&screenshot_dir().join("inbox-team-filter.png"));
    let (_, shown) = node.get(&token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(shown["thread"]["team"], "billing");
    node.stop();
}

#[test]
fn a_conversation_past_its_targets_is_marked_and_the_reports_count_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The org made three hours ago; a visitor wrote two hours ago, when the node's clock said so.
    let token = field(
        &threadline_tests::threadline_ok_ahead(&data, &["init"], "-3h"),
        "token:",
    );
    threadline_tests::edit_config(&data, |text| {
        text.replace("# reply_within_minutes = 60", "reply_within_minutes = 60")
            .replace("# resolution_minutes = 1440", "resolution_minutes = 90")
    });
    let node = Node::start_ahead(&data, "-2h");
    let mut late = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(late.say("m1", "Anyone there?")["type"], "ack");
    node.stop();
    // Now: another visitor writes; the first has waited two hours, past the hour's target.
    let node = Node::start(&data);
    let mut fresh = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(fresh.say("m1", "Hello")["type"], "ack");
    let agent = open_first_conversation(&node.base, &token);
    let marks = agent.wait_for(
        "the waiting times",
        "const w = [...document.querySelectorAll('.thread-item .waiting')].map(w => [w.className, w.textContent]); return w.length === 2 ? w : null",
    );
    let marks: Vec<(String, String)> = serde_json::from_value(marks).expect("pairs");
    assert!(
        marks
            .iter()
            .any(|(class, text)| class == "waiting overdue" && text.starts_with("Overdue: 2 h")),
        "{marks:?}"
    );
    assert!(
        marks
            .iter()
            .any(|(class, text)| class == "waiting" && text.starts_with("Waiting 0 min")),
        "{marks:?}"
    );
    // The service level targets: the first missed both, the second's first answer is due.
    let sla = agent.wait_for(
        "the targets' marks",
        "const w = [...document.querySelectorAll('.thread-item .sla')].map(w => [w.className, w.textContent]); return w.length === 2 ? w : null",
    );
    let sla: Vec<(String, String)> = serde_json::from_value(sla).expect("pairs");
    assert!(
        sla.contains(&(
            "sla breached".to_owned(),
            "Missed: first response, resolution".to_owned()
        )),
        "{sla:?}"
    );
    assert!(
        sla.iter().any(|(class, text)| class == "sla"
            && (text == "first response due in 59 min" || text == "first response due in 60 min")),
        "{sla:?}"
    );
    agent.screenshot(&screenshot_dir().join("inbox-overdue.png"));
    // The fresh one answered; the reports count both conversations and the answer.
    let (_, page) = node.get(&token, "/api/v1/threads?limit=1");
    let fresh_thread = page["threads"][0]["id"].as_str().expect("id").to_owned();
    let (status, _) = node.post(
        &token,
        &format!("/api/v1/threads/{fresh_thread}/replies"),
        &json!({"text": "Hello to you"}),
    );
    assert_eq!(status, 200);
    agent.click_on("#reports-open");
    let figures = agent.wait_for(
        "the report",
        "const f = [...document.querySelectorAll('#reports-figures div')].map(d => [d.querySelector('dt').textContent, d.querySelector('dd').textContent]); return f.length ? f : null",
    );
    let figures: Vec<(String, String)> = serde_json::from_value(figures).expect("pairs");
    assert!(
        figures.contains(&("Conversations".to_owned(), "2".to_owned())),
        "{figures:?}"
    );
    assert!(
        figures.contains(&(
            "SLA missed".to_owned(),
            "1 first response · 0 next response · 1 resolution".to_owned()
        )),
        "{figures:?}"
    );
    let charted = agent.run(
        "return [...document.querySelectorAll('#reports-chart .day')].reduce((n, d) => n + Number(d.dataset.total), 0)",
        json!([]),
    );
    assert_eq!(charted, json!(2));
    let agents = agent.run(
        "return [...document.querySelectorAll('#reports-agents tbody tr')].map(r => [...r.cells].map(c => c.textContent))",
        json!([]),
    );
    assert_eq!(agents[0][0], "admin", "{agents}");
    assert_eq!(agents[0][1], "1", "{agents}");
    agent.screenshot(&screenshot_dir().join("inbox-reports.png"));
    node.stop();
}

#[test]
fn an_agent_searches_messages_and_contacts_and_opens_a_conversation_at_the_message_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    // One visitor writes a long conversation, the words searched for early in it; another
    // visitor is named Maria Lopez.
    let mut long = threadline_tests::Visitor::connect(&node, None);
    for n in 0..10 {
        let text = if n == 2 {
            "The tracking code on the Zürich parcel is ZX-4471".to_owned()
        } else {
            format!("Message {n} of a long conversation. ").repeat(12)
        };
        let said = long.say(&format!("m{n}"), &text);
        assert_eq!(said["type"], "ack", "{said}");
    }
    let mut maria = threadline_tests::Visitor::connect(&node, None);
    assert_eq!(maria.say("m1", "Hello, it is Maria")["type"], "ack");
    let (_, page) = node.get(&token, "/api/v1/threads?limit=10");
    let marias = page["threads"][0].clone();
    let (status, _) = node.post(
        &token,
        &format!(
            "/api/v1/contacts/{}/attributes",
            marias["contact"].as_str().expect("id")
        ),
        &json!({"key": "name", "value": "Maria Lopez"}),
    );
    assert_eq!(status, 200);

    let agent = open_first_conversation(&node.base, &token);
    // The last word may be cut short: "zuri" finds "Zürich", marked.
    let input = agent.find("#search");
    agent.type_into(&input, "parcel zuri");
    let found = agent.wait_for(
        "the message found",
        "const m = [...document.querySelectorAll('.message-result')]; return m.length === 1 && [...m[0].querySelectorAll('mark')].map(x => x.textContent)",
    );
    assert_eq!(found, json!(["Zürich", "parcel"]));
    agent.wait_for(
        "the search's scope",
        "return document.getElementById('list-title').textContent === 'Search in Open'",
    );
    assert!(agent
        .run(
            "return document.getElementById('thread-list').hidden",
            json!([])
        )
        .as_bool()
        .expect("bool"));
    agent.screenshot(&screenshot_dir().join("inbox-search.png"));
    // Opened at that message, not at the newest, and the message is marked.
    agent.click_on(".message-result");
    agent.wait_for(
        "the conversation at the message found",
        "const f = document.querySelector('#events .event.found'); if (!f) return false; const pane = document.getElementById('events').getBoundingClientRect(); const r = f.getBoundingClientRect(); return r.top >= pane.top && r.bottom <= pane.bottom && f.textContent.includes('ZX-4471')",
    );
    let newest_hidden = agent.run(
        "const items = document.querySelectorAll('#events .event'); const last = items[items.length - 1].getBoundingClientRect(); return last.top > document.getElementById('events').getBoundingClientRect().bottom",
        json!([]),
    );
    assert_eq!(
        newest_hidden,
        json!(true),
        "the view stays at the message found"
    );
    agent.screenshot(&screenshot_dir().join("inbox-search-opened.png"));
    // A contact by name; it opens the contact's conversation.
    agent.run(
        "const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'));",
        json!([]),
    );
    agent.wait_for(
        "the list back",
        "return !document.getElementById('thread-list').hidden && document.getElementById('search-results').hidden",
    );
    let input = agent.find("#search");
    agent.type_into(&input, "maria lo");
    agent.wait_for(
        "Maria among the contacts",
        "const c = document.querySelector('.contact-result .who'); return c && c.textContent === 'Maria Lopez'",
    );
    agent.click_on(".contact-result");
    agent.wait_for(
        "Maria's conversation",
        &format!(
            "const s = document.querySelector('.thread-item.selected'); return document.getElementById('thread-title').textContent === 'Maria Lopez' && (!s || s.dataset.thread === '{}')",
            marias["id"].as_str().expect("thread")
        ),
    );
    // Nothing found says so.
    agent.run(
        "const s = document.getElementById('search'); s.value = 'nonexistentword'; s.dispatchEvent(new Event('input'));",
        json!([]),
    );
    agent.wait_for(
        "nothing found",
        "return document.getElementById('search-status').textContent === 'No messages found.'",
    );
    node.stop();
}

#[test]
fn a_visitor_sends_a_file_from_the_widget_and_gets_one_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let visitor = Browser::start();
    visitor.go(&format!("{}/webchat/demo", node.base));
    open_chat(&visitor);
    write(&visitor, "Here is the photo of the broken pole");
    bubbles_when(&visitor, "the first message", 1);
    // A file chosen in the widget: uploaded, then sent as a message.
    let photo = dir.path().join("pole.jpg");
    let bytes: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&photo, &bytes).expect("file written");
    let input = visitor.find(".tl-chat-file");
    visitor.type_into(&input, photo.to_str().expect("utf-8 path"));
    visitor.wait_for(
        "the file in the chat, stored",
        "const f = [...document.querySelectorAll('.tl-visitor .tl-chat-filelink')]; return f.length === 1 && f[0].textContent.startsWith('pole.jpg') && !document.querySelector('.tl-pending')",
    );
    // The agent has it, byte for byte.
    let (_, list) = node.get(&token, "/api/v1/threads?channel=webchat");
    let thread = list["threads"][0]["id"]
        .as_str()
        .expect("thread")
        .to_owned();
    let detail = threadline_tests::detail(&node, &token, &thread);
    let message = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["attachments"][0]["name"] == "pole.jpg")
        .expect("the message with the file")
        .clone();
    let event = message["id"].as_str().expect("id");
    assert_eq!(
        threadline_tests::attachment(&node, &token, &thread, event, 0),
        bytes
    );
    // The agent answers with a file; the visitor's widget shows it and fetches it.
    let label = b"%PDF-1.4 return label".to_vec();
    let uploaded: serde_json::Value = node
        .http()
        .post(&format!("{}/api/v1/attachments", node.base))
        .set("Authorization", &format!("Bearer {token}"))
        .send_bytes(&label)
        .expect("upload")
        .into_json()
        .expect("json");
    let (status, answer) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Sorry about that: here is a return label.", "attachments": [
            {"blob": uploaded["blob"], "name": "label.pdf", "media_type": "application/pdf"}
        ]}),
    );
    assert_eq!(status, 200, "{answer}");
    visitor.wait_for(
        "the agent's file",
        "return !!document.querySelector('.tl-agent .tl-chat-filelink')",
    );
    visitor.screenshot(&screenshot_dir().join("webchat-files.png"));
    let fetched = visitor.run(
        "const item = document.querySelector('.tl-agent[data-event]');
         return fetch('/webchat/files/' + item.dataset.event + '/0', {headers: {'X-Threadline-Session': localStorage.getItem('threadline.webchat.session')}})
           .then(r => r.text());",
        json!([]),
    );
    assert_eq!(fetched, json!("%PDF-1.4 return label"));
    node.stop();
}
