//! Support for the end-to-end tests in `it/`: finding the real `threadline` binary, running its
//! commands in a temporary data folder, and running a node on a free loopback port.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `threadline` binary, built once per test run (`cargo build` of the node's binary in the
/// same target folder and profile; a no-op when it is up to date).
pub fn threadline_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let mut build = Command::new(env!("CARGO"));
        build.args([
            "build",
            "--quiet",
            "-p",
            "threadline-node",
            "--bin",
            "threadline",
        ]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the threadline binary failed");
    });
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/threadline
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir.join(format!("threadline{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the binary is built",
        binary.display()
    );
    binary
}

/// Runs `threadline` with `args` and the data folder `data_dir`, and returns its output.
pub fn run_threadline(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(threadline_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("THREADLINE_DATA_DIR")
        .output()
        .expect("threadline starts")
}

/// Runs `threadline` with `args` and returns its standard output, failing the test with its
/// standard error if it fails.
pub fn threadline_ok(data_dir: &Path, args: &[&str]) -> String {
    let output = run_threadline(data_dir, args);
    assert!(
        output.status.success(),
        "threadline {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value after `label` on the line that starts with it (`token: thl_...`).
pub fn field(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{output}"))
}

/// A running `threadline run` process on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct Node {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Node {
    /// Starts a node on `data_dir` and waits for its ready line.
    pub fn start(data_dir: &Path) -> Node {
        let mut child = Command::new(threadline_binary())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["run", "--listen", "127.0.0.1:0"])
            .env_remove("THREADLINE_DATA_DIR")
            .env_remove("THREADLINE_API_LISTEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("threadline run starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("threadline run printed its address before exiting")
                .expect("stdout is UTF-8");
            if let Some(address) = line.strip_prefix("threadline listening on ") {
                break address.trim().to_owned();
            }
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node { child, base }
    }

    /// Stops the node with SIGTERM and waits for it to exit cleanly.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("node exits");
        assert!(exit.success(), "node exited with {exit}");
    }

    /// Kills the node with SIGKILL (a crash) and waits for it to be gone.
    pub fn crash(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// An HTTP agent with generous timeouts (the machines are small and shared).
    pub fn http(&self) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build()
    }

    /// `GET path` with a bearer token; returns the status and the JSON body.
    pub fn get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"));
        answer(request.call())
    }

    /// `POST path` with a bearer token and a JSON body.
    pub fn post(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"));
        answer(request.send_json(body))
    }

    /// `POST path` with a raw body.
    pub fn post_raw(&self, token: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json");
        answer(request.send_string(body))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("HTTP request failed: {err}"),
    };
    let status = response.status();
    let body = response.into_string().expect("body is text");
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, json)
}

/// A web chat visitor: a WebSocket to the node's `/webchat/ws`, as the widget opens it.
#[derive(Debug)]
pub struct Visitor {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    /// The session secret the node gave (or resumed).
    pub session: String,
    /// The history in the `welcome` frame.
    pub history: Vec<serde_json::Value>,
}

impl Visitor {
    /// Connects with `session` (a returning visitor) or none (a new one), as a page of the node.
    pub fn connect(node: &Node, session: Option<&str>) -> Visitor {
        let origin = node.base.clone();
        Visitor::connect_from(node, session, &origin).expect("the node's own pages may connect")
    }

    /// Connects as a page of `origin`; the HTTP status if the node refuses the upgrade.
    pub fn connect_from(node: &Node, session: Option<&str>, origin: &str) -> Result<Visitor, u16> {
        use tungstenite::client::IntoClientRequest as _;
        let url = format!("{}/webchat/ws", node.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("valid URL");
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("valid header"));
        let (mut socket, _) = match tungstenite::connect(request) {
            Ok(connected) => connected,
            Err(tungstenite::Error::Http(response)) => return Err(response.status().as_u16()),
            Err(err) => panic!("cannot connect to the web chat: {err}"),
        };
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_mut() {
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
        }
        let mut visitor = Visitor {
            socket,
            session: String::new(),
            history: Vec::new(),
        };
        visitor.send(&serde_json::json!({"type": "hello", "session": session}));
        let welcome = visitor.receive().expect("a welcome frame");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        visitor.session = welcome["session"].as_str().expect("session").to_owned();
        visitor.history = welcome["history"].as_array().expect("history").clone();
        Ok(visitor)
    }

    /// Sends a frame.
    pub fn send(&mut self, frame: &serde_json::Value) {
        self.socket
            .send(tungstenite::Message::text(frame.to_string()))
            .expect("frame sent");
    }

    /// The next frame, or `None` if none comes within the read timeout or the socket closed.
    pub fn receive(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"))
                }
                Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Waits at most `wait` for a frame.
    pub fn receive_within(&mut self, wait: Duration) -> Option<serde_json::Value> {
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = self.socket.get_mut() {
            stream.set_read_timeout(Some(wait)).expect("timeout");
        }
        let frame = self.receive();
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = self.socket.get_mut() {
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
        }
        frame
    }

    /// Sends a message and returns the `ack` (or `error`) frame for it, skipping others.
    pub fn say(&mut self, id: &str, text: &str) -> serde_json::Value {
        self.send(&serde_json::json!({"type": "message", "id": id, "text": text}));
        loop {
            let frame = self.receive().expect("an answer to the message");
            if frame["type"] == "ack" || frame["type"] == "error" {
                return frame;
            }
        }
    }
}
