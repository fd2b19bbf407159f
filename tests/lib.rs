//! Support for the end-to-end tests in `it/`: finding the real `threadline` binary, running its
//! commands in a temporary data folder, and running a node on a free loopback port; and
//! [`graph`], a local stand-in of Meta's Graph API for the Messenger, Instagram and WhatsApp
//! bridges.

pub mod graph;
pub mod receiver;
pub mod slack;
pub mod telegram;
pub mod twilio;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// `tests/fixtures/store_fault.c` built into a preloadable library (once per test run).
fn store_fault_library() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
            let out = std::env::temp_dir()
                .join(format!("threadline-store-fault-{}.so", std::process::id()));
            let status = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&out)
                .arg(fixtures.join("store_fault.c"))
                .arg("-ldl")
                .status()
                .expect("cc runs (scripts/test installs build-essential)");
            assert!(status.success(), "store_fault.c does not build");
            out
        })
        .clone()
}

/// Every thread the agent of `token` sees (the first page of `/api/v1/threads`).
pub fn threads(node: &Node, token: &str) -> Vec<serde_json::Value> {
    let (status, list) = node.get(token, "/api/v1/threads");
    assert_eq!(status, 200, "{list}");
    list["threads"].as_array().expect("threads").clone()
}

/// A thread as the inbox shows it (`GET /api/v1/threads/{id}`).
pub fn detail(node: &Node, token: &str, thread: &str) -> serde_json::Value {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    detail
}

/// The events of a thread's `detail` of one kind (`thread.receipt`).
pub fn events_of_kind(detail: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Starts `threadline bridge <channel>` (a webhook bridge on its own) against `node`, with the
/// bridge `token` and key file from [`add_bridge`] and the section [`move_section_out`] wrote,
/// listening on `listen`; returns it once it serves.
pub fn start_webhook_bridge(
    data_dir: &Path,
    channel: &str,
    node: &Node,
    (key_file, token): (&Path, &str),
    config: &Path,
    listen: &str,
) -> Node {
    Node::start_command(
        data_dir,
        &[
            "bridge",
            channel,
            "--node",
            &node.base,
            "--token",
            token,
            "--key-file",
            key_file.to_str().expect("utf-8 path"),
            "--config",
            config.to_str().expect("utf-8 path"),
            "--listen",
            listen,
        ],
        &format!("{channel} bridge listening on "),
    )
}

/// Checks that a web chat's `thread` continued on `handle`: its replies go there, it is still
/// the node's only thread, and the contact holds both the handle and the web chat's.
pub fn assert_continued_on(node: &Node, token: &str, thread: &str, handle: &str) {
    let shown = detail(node, token, thread);
    assert_eq!(shown["thread"]["route"]["handle"], handle, "{shown}");
    assert_eq!(threads(node, token).len(), 1, "one thread still");
    let contact = shown["thread"]["contact"].as_str().expect("contact");
    let (_, record) = node.get(token, &format!("/api/v1/contacts/{contact}"));
    let handles: Vec<&str> = record["handles"]
        .as_array()
        .expect("handles")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert!(
        handles.contains(&handle) && handles.iter().any(|h| h.starts_with("webchat:")),
        "{record}"
    );
}

/// The bytes of the `n`th file of `event` in `thread`, as an agent downloads them.
pub fn attachment(node: &Node, token: &str, thread: &str, event: &str, n: usize) -> Vec<u8> {
    let response = node
        .http()
        .get(&format!(
            "{}/api/v1/threads/{thread}/events/{event}/attachments/{n}",
            node.base
        ))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("the attachment");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).expect("its bytes");
    bytes
}

/// The receipts (`delivered`, `read`, `failed`) recorded for the reply `target`, sorted.
pub fn receipts_of(detail: &serde_json::Value, target: &str) -> Vec<String> {
    let mut receipts: Vec<String> = events_of_kind(detail, "thread.receipt")
        .iter()
        .filter(|e| e["detail"]["target"] == target)
        .map(|e| e["detail"]["receipt"].as_str().unwrap_or("").to_owned())
        .collect();
    receipts.sort();
    receipts
}

/// The status a node answers to a request (`"POST /path"`) that announces a body of `length`
/// bytes with `headers`, read before any of the body is sent (a node refuses an oversized
/// body on its `Content-Length`, and would hang up on a client still sending it).
pub fn oversize_status(
    node: &Node,
    method_and_path: &str,
    headers: &[(&str, &str)],
    length: usize,
) -> u16 {
    use std::io::{Read as _, Write as _};
    let address = node.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "{method_and_path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    stream.write_all(head.as_bytes()).expect("head sent");
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).expect("an answer");
    let line = String::from_utf8_lossy(&answer[..n]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {line}"))
}

/// A program of the Python venv `scripts/test` makes (`target/venv/bin/<name>`).
pub fn venv_program(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/venv/bin/{name}"));
    assert!(
        path.exists(),
        "{} is missing: run the tests with scripts/test, which makes the venv",
        path.display()
    );
    path
}

/// A client program (a customer's XMPP or Matrix client, in Python) driven over its stdin,
/// one JSON command a line, reporting one JSON object a line on its stdout. Every report is
/// kept in `seen`; the program is killed on drop.
#[derive(Debug)]
pub struct ScriptedClient {
    child: Child,
    stdin: std::process::ChildStdin,
    reports: std::sync::mpsc::Receiver<serde_json::Value>,
    /// What the client reported so far.
    pub seen: Vec<serde_json::Value>,
}

impl ScriptedClient {
    /// Starts `command` with its stdin and stdout piped.
    pub fn spawn(mut command: Command) -> ScriptedClient {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the client starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, reports) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
            }
        });
        ScriptedClient {
            child,
            stdin,
            reports,
            seen: Vec::new(),
        }
    }

    /// Sends a command.
    pub fn command(&mut self, command: &serde_json::Value) {
        use std::io::Write as _;
        writeln!(self.stdin, "{command}").expect("the client takes commands");
        self.stdin.flush().expect("flushed");
    }

    /// The first report, seen already or arriving within `within`, that `pick` takes.
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        pick: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(found) = self.seen.iter().find(|r| pick(r)) {
            return found.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(report) => {
                    self.seen.push(report.clone());
                    if pick(&report) {
                        return report;
                    }
                }
                Err(_) => panic!(
                    "not within {within:?}: {what}; the client said {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Takes every report that arrives within `quiet` of the last.
    pub fn drain(&mut self, quiet: Duration) {
        while let Ok(report) = self.reports.recv_timeout(quiet) {
            self.seen.push(report);
        }
    }
}

impl Drop for ScriptedClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Moves the `[section]` of a data folder's config.toml (up to the `[next]` section) into a
/// file of its own beside it, for a standalone bridge; the node no longer runs that bridge.
pub fn move_section_out(data_dir: &Path, section: &str, next: &str) -> PathBuf {
    let config = data_dir.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let start = text.find(&format!("[{section}]")).expect("the section");
    let end = text.find(&format!("[{next}]")).expect("the next section");
    let bridge_config = data_dir.join(format!("{section}.toml"));
    std::fs::write(&bridge_config, &text[start..end]).expect("bridge config written");
    std::fs::write(&config, format!("{}{}", &text[..start], &text[end..])).expect("config");
    bridge_config
}

/// `threadline bridge add <channel>` in `data_dir` (node stopped): the file the bridge key is
/// written to, and the bridge's token.
pub fn add_bridge(data_dir: &Path, channel: &str) -> (PathBuf, String) {
    let added = threadline_ok(data_dir, &["bridge", "add", channel]);
    let key_file = data_dir.join(format!("{channel}-bridge.key"));
    std::fs::write(&key_file, field(&added, "bridge key:")).expect("key written");
    (key_file, field(&added, "token:"))
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

/// Runs `threadline` with `args` and the data folder `data_dir`, and returns its output.
pub fn run_threadline(data_dir: &Path, args: &[&str]) -> Output {
    run_threadline_with(data_dir, args, &[])
}

/// Rewrites the data folder's `config.toml` (as `init` wrote it) with `edit`.
pub fn edit_config(data_dir: &Path, edit: impl FnOnce(String) -> String) {
    let path = data_dir.join("config.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, edit(text)).expect("config written");
}

/// [`run_threadline`] with extra environment variables.
pub fn run_threadline_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(threadline_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("THREADLINE_DATA_DIR")
        .envs(envs.iter().copied())
        .output()
        .expect("threadline starts")
}

/// libfaketime, to run `threadline` ahead of the machine's clock.
fn libfaketime() -> PathBuf {
    ["x86_64", "aarch64"]
        .iter()
        .map(|arch| {
            PathBuf::from(format!(
                "/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1"
            ))
        })
        .find(|path| path.exists())
        .expect("libfaketime is installed (scripts/test installs the faketime package)")
}

/// [`threadline_ok`] living `offset` ahead of the machine's clock (libfaketime's `FAKETIME`
/// syntax: `+40d`).
pub fn threadline_ok_ahead(data_dir: &Path, args: &[&str], offset: &str) -> String {
    let library = libfaketime();
    let library = library.to_str().expect("a UTF-8 path");
    let output = run_threadline_with(
        data_dir,
        args,
        &[("LD_PRELOAD", library), ("FAKETIME", offset)],
    );
    assert!(
        output.status.success(),
        "threadline {args:?} at {offset} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
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
    /// What it printed before its ready line.
    pub banner: Vec<String>,
    /// The last [`KEPT_LOG_LINES`] lines of its log (stderr; also passed through to the test's).
    logs: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

/// Log lines of a node kept for [`Node::logged`].
const KEPT_LOG_LINES: usize = 10_000;

impl Node {
    /// Starts a node on `data_dir` and waits for its ready line.
    pub fn start(data_dir: &Path) -> Node {
        Node::start_at(data_dir, "127.0.0.1:0")
    }

    /// Starts a node listening on `address` (to come back at the same address after a
    /// restart, as a browser's stored session needs).
    pub fn start_at(data_dir: &Path, address: &str) -> Node {
        Node::start_with_p2p(data_dir, address, "/ip4/127.0.0.1/tcp/0")
    }

    /// Starts a node with its API on `address` and replication on `p2p` (a multiaddr; to come
    /// back where its peers dial it after a restart).
    pub fn start_with_p2p(data_dir: &Path, address: &str, p2p: &str) -> Node {
        Node::start_command(
            data_dir,
            &["run", "--listen", address, "--p2p-listen", p2p],
            "threadline listening on ",
        )
    }

    /// Starts `threadline <args>` (a server: a node, a standalone bridge) and waits for the
    /// line that starts with `ready` and gives its address.
    pub fn start_command(data_dir: &Path, args: &[&str], ready: &str) -> Node {
        Node::start_command_with(data_dir, args, ready, &[])
    }

    /// A node on loopback living `offset` ahead of the machine's clock (libfaketime's
    /// `FAKETIME` syntax: `+25h`), preloaded into the node's own process so that stopping it
    /// stops the node (the `faketime` program forks and would leave it running).
    pub fn start_ahead(data_dir: &Path, offset: &str) -> Node {
        let library = libfaketime();
        let library = library.to_str().expect("a UTF-8 path");
        Node::start_command_with(
            data_dir,
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
            ],
            "threadline listening on ",
            &[("LD_PRELOAD", library), ("FAKETIME", offset)],
        )
    }

    /// A node on a fixed p2p address (so it comes back where its peers look for it after a
    /// restart), optionally living `ahead` of the machine's clock (libfaketime's `+3m`).
    pub fn start_on(data_dir: &Path, p2p: &str, ahead: Option<&str>) -> Node {
        let library = ahead.map(|_| libfaketime());
        let envs: Vec<(&str, &str)> = match (&library, ahead) {
            (Some(library), Some(offset)) => vec![
                ("LD_PRELOAD", library.to_str().expect("a UTF-8 path")),
                ("FAKETIME", offset),
            ],
            _ => Vec::new(),
        };
        Node::start_command_with(
            data_dir,
            &["run", "--listen", "127.0.0.1:0", "--p2p-listen", p2p],
            "threadline listening on ",
            &envs,
        )
    }

    /// A node whose store sits on a disk that fails on demand: while `trigger` exists, every
    /// write and sync of a file in the data folder's store fails with EIO
    /// (`tests/fixtures/store_fault.c`, preloaded into the node's own process).
    pub fn start_with_failing_disk(data_dir: &Path, trigger: &Path) -> Node {
        let library = store_fault_library();
        let store = data_dir
            .join("store")
            .canonicalize()
            .expect("the data folder has a store");
        Node::start_command_with(
            data_dir,
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
            ],
            "threadline listening on ",
            &[
                ("LD_PRELOAD", library.to_str().expect("a UTF-8 path")),
                ("STORE_FAULT_DIR", store.to_str().expect("a UTF-8 path")),
                (
                    "STORE_FAULT_TRIGGER",
                    trigger.to_str().expect("a UTF-8 path"),
                ),
            ],
        )
    }

    /// Waits up to `within` for the node's process to exit by itself; its exit status, or
    /// `None` (the node is still running).
    pub fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on the node") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Node::start_command`] with extra environment variables.
    pub fn start_command_with(
        data_dir: &Path,
        args: &[&str],
        ready: &str,
        envs: &[(&str, &str)],
    ) -> Node {
        let mut command = Command::new(threadline_binary());
        let mut child = command
            .envs(envs.iter().copied())
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("THREADLINE_DATA_DIR")
            .env_remove("THREADLINE_API_LISTEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("threadline run starts");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let kept = std::sync::Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if kept.len() == KEPT_LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .expect("threadline run printed its address before exiting")
                .expect("stdout is UTF-8");
            if let Some(address) = line.strip_prefix(ready) {
                break address.trim().to_owned();
            }
            banner.push(line);
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node {
            child,
            base,
            banner,
            logs,
        }
    }

    /// The node's log lines (stderr, at `RUST_LOG=warn`) read so far that contain every one of
    /// `needles` (they arrive through a pipe: wait for one with [`eventually`]).
    pub fn logged(&self, needles: &[&str]) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .cloned()
            .collect()
    }

    /// The live stream (`GET /api/v1/stream`) as the agent of `token` sees it: each event's
    /// name (`change`, `typing`, ...) and data, as they come.
    pub fn live_stream(
        &self,
        token: &str,
    ) -> std::sync::mpsc::Receiver<(String, serde_json::Value)> {
        let response = self
            .http()
            .get(&format!("{}/api/v1/stream", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("the stream opens");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut name = String::new();
            for line in BufReader::new(response.into_reader()).lines() {
                let Ok(line) = line else { break };
                if let Some(event) = line.strip_prefix("event:") {
                    name = event.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data = serde_json::from_str(data.trim()).unwrap_or_default();
                    if tx.send((name.clone(), data)).is_err() {
                        break;
                    }
                }
            }
        });
        rx
    }

    /// What `GET /api/v1/replication` says: PeerId, addresses, peers, digests.
    pub fn replication(&self, token: &str) -> serde_json::Value {
        let (status, view) = self.get(token, "/api/v1/replication");
        assert_eq!(status, 200, "{view}");
        view
    }

    /// The address other nodes reach this one's replication at (with its PeerId).
    pub fn p2p_address(&self, token: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let view = self.replication(token);
            if let Some(address) = view["listening"][0].as_str() {
                return address.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "replication never listened: {view}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Sends the node a signal by name (`STOP` pauses it as a hung host would, `CONT`
    /// resumes it): its connections stay open, it just answers nothing meanwhile.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
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

    /// `GET path` with a bearer token, answered `200` with text (a CSV download): the text.
    pub fn get_text(&self, token: &str, path: &str) -> String {
        let answer = self
            .http()
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|err| panic!("{path}: {err}"));
        assert_eq!(answer.status(), 200, "{path}");
        answer.into_string().expect("a text body")
    }

    /// `GET path` with a bearer token, or `None` if the connection failed (a node that is
    /// shedding connections resets them).
    pub fn try_get(&self, token: &str, path: &str) -> Option<(u16, serde_json::Value)> {
        let result = self
            .http()
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .call();
        match result {
            Err(ureq::Error::Transport(_)) => None,
            result => Some(answer(result)),
        }
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

    /// [`Node::post`], or `None` when the request got no answer (the node is gone).
    pub fn try_post(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Option<(u16, serde_json::Value)> {
        let result = self
            .http()
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body);
        match result {
            Err(ureq::Error::Transport(_)) => None,
            result => Some(answer(result)),
        }
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

    /// `PUT path` with a bearer token and a JSON body.
    pub fn put(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .put(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"));
        answer(request.send_json(body))
    }

    /// `DELETE path` as `token`.
    pub fn delete(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .delete(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"));
        answer(request.call())
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

/// An error a WebDriver command answered with.
#[derive(Debug)]
pub struct WebDriverError {
    /// The WebDriver error code, such as `stale element reference`.
    pub error: String,
    /// The driver's message.
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// A web chat visitor: a WebSocket to the node's `/webchat/ws`, as the widget opens it.
#[derive(Debug)]
pub struct Visitor {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    /// The session secret the node gave (or resumed).
    pub session: String,
    /// The history in the `welcome` frame.
    pub history: Vec<serde_json::Value>,
    /// Whether the `welcome` frame said an agent is at the inbox.
    pub agents_online: bool,
    /// The app the `welcome` frame said the conversation went on in, if any.
    pub moved: Option<String>,
    /// Frames that came before `welcome` (a refused identity).
    pub notices: Vec<serde_json::Value>,
}

impl Visitor {
    /// Connects with `session` (a returning visitor) or none (a new one), as a page of the node.
    pub fn connect(node: &Node, session: Option<&str>) -> Visitor {
        let origin = node.base.clone();
        Visitor::connect_from(node, session, &origin, None)
            .expect("the node's own pages may connect")
    }

    /// Connects with a website's signed identity (`{"email", "signature"}`).
    pub fn connect_as(node: &Node, session: Option<&str>, identity: serde_json::Value) -> Visitor {
        let origin = node.base.clone();
        Visitor::connect_from(node, session, &origin, Some(identity))
            .expect("the node's own pages may connect")
    }

    /// Connects as a page of `origin`; the HTTP status if the node refuses the upgrade.
    pub fn connect_from(
        node: &Node,
        session: Option<&str>,
        origin: &str,
        identity: Option<serde_json::Value>,
    ) -> Result<Visitor, u16> {
        let mut visitor = Visitor {
            socket: Visitor::open(node, origin)?,
            session: String::new(),
            history: Vec::new(),
            agents_online: false,
            moved: None,
            notices: Vec::new(),
        };
        let mut hello = serde_json::json!({"type": "hello", "session": session});
        if let Some(identity) = identity {
            hello["identity"] = identity;
        }
        visitor.send(&hello);
        let welcome = loop {
            let frame = visitor.receive().expect("a welcome frame");
            if frame["type"] == "welcome" {
                break frame;
            }
            visitor.notices.push(frame);
        };
        visitor.agents_online = welcome["agents_online"] == true;
        visitor.moved = welcome["moved"].as_str().map(str::to_owned);
        visitor.session = welcome["session"].as_str().expect("session").to_owned();
        visitor.history = welcome["history"].as_array().expect("history").clone();
        Ok(visitor)
    }

    /// Opens the socket as a page of the node, sends `hello` as its first frame (one the node
    /// refuses), and returns what the node answered before it closed the socket.
    pub fn refused_hello(node: &Node, hello: &serde_json::Value) -> Vec<serde_json::Value> {
        let origin = node.base.clone();
        let mut socket = Visitor::open(node, &origin).expect("the node's own pages may connect");
        socket
            .send(tungstenite::Message::text(hello.to_string()))
            .expect("frame sent");
        let mut answers = Vec::new();
        loop {
            match socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    answers.push(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Ok(tungstenite::Message::Close(_))
                | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return answers
                }
                Ok(_) => {}
                Err(err) => panic!("the node neither answered nor closed: {err}; {answers:?}"),
            }
        }
    }

    /// The WebSocket to the node's `/webchat/ws`, as a page of `origin` opens it; the HTTP
    /// status if the node refuses the upgrade.
    fn open(
        node: &Node,
        origin: &str,
    ) -> Result<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>, u16>
    {
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
        Ok(socket)
    }

    /// Sends a frame.
    pub fn send(&mut self, frame: &serde_json::Value) {
        self.socket
            .send(tungstenite::Message::text(frame.to_string()))
            .expect("frame sent");
    }

    /// Asks to continue on `channel` and returns the one-time link the chat answers with
    /// (frames before it are skipped; an error frame fails the test).
    pub fn continue_link(&mut self, channel: &str) -> String {
        self.send(&serde_json::json!({"type": "continue", "channel": channel}));
        loop {
            let frame = self.receive().expect("a frame");
            if frame["type"] == "continue_link" {
                assert_eq!(frame["channel"], channel);
                return frame["url"].as_str().expect("url").to_owned();
            }
            assert_ne!(frame["type"], "error", "{frame}");
        }
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

/// A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`;
/// `scripts/test` installs them). One ChromeDriver and one browser session each, with a fresh
/// profile; both are ended when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element found on the page (its WebDriver reference).
#[derive(Debug, Clone)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a browser session.
    pub fn start() -> Browser {
        for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: run the tests with scripts/test, which installs chromium and chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_owned(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let ready = (0..100).any(|_| {
            let up = http
                .get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<serde_json::Value>().ok())
                .is_some_and(|status| status["value"]["ready"] == true);
            if !up {
                std::thread::sleep(Duration::from_millis(100));
            }
            up
        });
        assert!(ready, "chromedriver did not become ready");
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain(std::iter::once(format!(
            "--user-data-dir={}",
            profile.path().display()
        )))
        .collect::<Vec<_>>();
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let answer: serde_json::Value = http
            .post(&format!("{base}/session"))
            .send_json(capabilities)
            .unwrap_or_else(|err| panic!("cannot open a browser session: {err}"))
            .into_json()
            .expect("JSON");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|refused| panic!("WebDriver {method} {path}: {refused}"))
    }

    /// Runs a WebDriver command; `Err` carries the driver's error code and message.
    fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, WebDriverError> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let request = http.request(method, &url);
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("WebDriver {method} {path}: {err}"),
        };
        let answer: serde_json::Value = response.into_json().expect("JSON");
        match answer["value"]["error"].as_str() {
            Some(error) => Err(WebDriverError {
                error: error.to_owned(),
                message: answer["value"]["message"].to_string(),
            }),
            None => Ok(answer["value"].clone()),
        }
    }

    /// Loads `url`.
    pub fn go(&self, url: &str) {
        self.command("POST", "/url", Some(serde_json::json!({ "url": url })));
    }

    /// Resizes the browser's window to `width` × `height` CSS pixels (the page's viewport is
    /// what the window's frame leaves of it).
    pub fn resize(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(serde_json::json!({ "width": width, "height": height })),
        );
    }

    /// Grants the pages the permission to show desktop notifications (as a user answering
    /// "Allow" would), through Chrome's DevTools protocol.
    pub fn allow_notifications(&self) {
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(serde_json::json!({
                "cmd": "Browser.grantPermissions",
                "params": {"permissions": ["notifications"]},
            })),
        );
    }

    /// Reloads the page.
    pub fn reload(&self) {
        self.command("POST", "/refresh", Some(serde_json::json!({})));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn run(&self, script: &str, args: serde_json::Value) -> serde_json::Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({ "script": script, "args": args })),
        )
    }

    /// Waits (up to 20 s) for `script` to return something truthy, and returns it.
    pub fn wait_for(&self, what: &str, script: &str) -> serde_json::Value {
        for _ in 0..200 {
            let value = self.run(script, serde_json::json!([]));
            let truthy = !matches!(
                &value,
                serde_json::Value::Null | serde_json::Value::Bool(false)
            ) && value != serde_json::json!("")
                && value != serde_json::json!(0);
            if truthy {
                return value;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}");
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Element {
        let found = self.command(
            "POST",
            "/element",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        Element(
            found[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {found}"))
                .to_owned(),
        )
    }

    /// Clicks the first element `css` selects. The page may re-render it between the lookup
    /// and the click (the inbox redraws a thread when it changes, a search redraws its
    /// results), so a stale or for a moment missing element is looked up again.
    pub fn click_on(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.try_command(
                "POST",
                "/element",
                Some(serde_json::json!({"using": "css selector", "value": css})),
            );
            let element = match found {
                Ok(found) => Element(
                    found[ELEMENT_KEY]
                        .as_str()
                        .unwrap_or_else(|| panic!("no element {css}: {found}"))
                        .to_owned(),
                ),
                Err(refused) if refused.error == "no such element" && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(refused) => panic!("WebDriver find {css}: {refused}"),
            };
            match self.try_command(
                "POST",
                &format!("/element/{}/click", element.0),
                Some(serde_json::json!({})),
            ) {
                Ok(_) => return,
                Err(refused)
                    if refused.error == "stale element reference" && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(refused) => panic!("WebDriver click on {css}: {refused}"),
            }
        }
    }

    /// Types into an element (`\u{E007}` is Enter).
    pub fn type_into(&self, element: &Element, text: &str) {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(serde_json::json!({ "text": text })),
        );
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", "/screenshot", None);
        let png = base64_decode(encoded.as_str().expect("base64 text"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("screenshot written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session first, or Chromium outlives its driver.
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        let _ = http
            .delete(&format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where the test run saves screenshots: `target/screenshots/` (not committed).
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .join("screenshots")
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Polls `check` until it returns `Some`, or fails the test after `within` saying `what`.
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`, with its bytes.
pub fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("lists") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("reads");
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// The files under `dir` that hold `needle` anywhere in their bytes (what `strings -a | grep`
/// would find, and more).
pub fn holding(dir: &Path, needle: impl AsRef<[u8]>) -> Vec<PathBuf> {
    let needle = needle.as_ref();
    files_under(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path)
        .collect()
}
