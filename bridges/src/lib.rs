//! Threadline bridges: the bridge SDK and the built-in bridges (web chat first; email, Matrix,
//! XMPP, WhatsApp, Messenger, Slack, Telegram and SMS follow the same shape).
//!
//! **Architecture Invariant:** bridges know nothing about sled, libp2p or node internals. They
//! depend on [`threadline_protocol`] and this crate's [`sdk`] only: a bridge turns an external
//! app's message into an inbound event signed with its own certified key, and answers
//! deliveries with signed receipts. The node hosts built-in bridges by giving them a
//! [`sdk::NodeLink`]; a standalone bridge gets one that speaks the node's bridge API.
//!
//! docs/BRIDGES.md explains how to write and run a bridge, with the web chat as the example.

#![warn(missing_docs)]

pub mod email;
pub mod graph;
pub mod http_link;
pub mod instagram;
pub mod matrix;
pub mod messenger;
pub mod rate;
pub mod sdk;
pub mod slack;
pub mod sms;
pub mod telegram;
pub mod webchat;
pub mod webhook;
pub mod whatsapp;
pub mod window;
pub mod xmpp;

pub use threadline_protocol as protocol;

#[cfg(test)]
mod https {
    use std::io::Read as _;

    /// The providers' APIs are https only (`https://graph.facebook.com`, `https://slack.com/api`,
    /// ...): the HTTP client the bridges share must speak TLS, not refuse the scheme. A
    /// loopback listener sees the client's first bytes: a TLS handshake record (0x16, version
    /// 3.x), the ClientHello.
    #[test]
    fn requests_to_https_urls_start_a_tls_handshake() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = listener.local_addr().expect("address").port();
        let client = std::thread::spawn(move || {
            ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .get(&format!("https://127.0.0.1:{port}/v21.0/me"))
                .call()
                .map(|response| response.status())
                .map_err(|err| err.to_string())
        });
        let (mut stream, _) = listener.accept().expect("the client connects");
        let mut first = [0u8; 3];
        stream.read_exact(&mut first).expect("the client writes");
        assert_eq!((first[0], first[1]), (0x16, 0x03), "a TLS handshake record");
        drop(stream);
        // The handshake fails (nobody answers it), but not for want of TLS.
        let err = client.join().expect("joins").expect_err("no server");
        assert!(!err.contains("no TLS backend"), "TLS is built in: {err}");
    }
}
