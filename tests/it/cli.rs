//! The command line as a new user meets it.

use threadline_tests::run_threadline;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_names_the_binary_and_the_crate_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = run_threadline(tmp.path(), &["--version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("threadline {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn init_creates_an_org_and_node_that_identity_reads_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let output = run_threadline(&data, &["init"]);
    assert!(output.status.success(), "init failed: {}", stderr(&output));
    let printed = stdout(&output);
    let peer_line = printed
        .lines()
        .find(|l| l.starts_with("peer id:"))
        .expect("init prints the peer id")
        .to_owned();
    assert!(
        peer_line.contains("12D3KooW"),
        "an ed25519 PeerId: {peer_line}"
    );

    for file in [
        "VERSION",
        "identity.toml",
        "keys/org.key",
        "keys/node.key",
        "keys/node.cert",
    ] {
        assert!(data.join(file).is_file(), "{file} exists");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for key in ["keys/org.key", "keys/node.key"] {
            let mode = std::fs::metadata(data.join(key))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is readable by its owner only");
        }
    }
    let identity_toml: toml::Table = std::fs::read_to_string(data.join("identity.toml"))
        .expect("read")
        .parse()
        .expect("identity.toml is TOML");
    assert!(peer_line.ends_with(identity_toml["peer_id"].as_str().expect("peer_id string")));

    let output = run_threadline(&data, &["identity"]);
    assert!(
        output.status.success(),
        "identity failed: {}",
        stderr(&output)
    );
    assert!(stdout(&output).contains(&peer_line));
}

#[test]
fn init_twice_is_refused_and_keeps_the_first_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    assert!(run_threadline(&data, &["init"]).status.success());
    let org_key = std::fs::read(data.join("keys/org.key")).expect("read");
    let output = run_threadline(&data, &["init"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already exists and is not empty"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read(data.join("keys/org.key")).expect("read"),
        org_key
    );
}

#[test]
fn identity_without_a_data_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = run_threadline(&tmp.path().join("nowhere"), &["identity"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is not a Threadline data folder"),
        "{}",
        stderr(&output)
    );
}

/// The lines of an error: one, `error: …`, with each cause once.
fn error_lines(output: &std::process::Output) -> Vec<String> {
    stderr(output)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn run_on_a_port_in_use_fails_before_making_an_org() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("address").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let output = run_threadline(&data, &["run", "--listen", &address]);
    assert!(!output.status.success());
    assert!(!stdout(&output).contains("token"), "{}", stdout(&output));
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("error: cannot listen on {address}: ")),
        "{lines:?}"
    );
    assert!(!data.exists(), "no data folder made");
    // Once the port is free, the same command makes the org and serves.
    drop(taken);
    let node = threadline_tests::Node::start_at(&data, &address);
    assert!(node.base.ends_with(&address));
}

#[test]
fn an_admin_command_in_a_folder_init_never_made_says_so_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("an empty folder");
    for args in [
        &["agent", "add", "maria"][..],
        &["agent", "list"][..],
        &["bridge", "add", "sms"][..],
        &["identity"][..],
    ] {
        let output = run_threadline(&data, args);
        assert!(!output.status.success(), "{args:?}");
        let lines = error_lines(&output);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(
            lines[0].contains("is not a Threadline data folder")
                && lines[0].contains("threadline init"),
            "{lines:?}"
        );
        assert!(!stdout(&output).contains("token"), "{args:?}");
    }
    assert_eq!(
        std::fs::read_dir(&data).expect("dir").count(),
        0,
        "nothing written"
    );
    // The folder is still good for `init`.
    threadline_tests::threadline_ok(&data, &["init"]);
}

#[test]
fn agents_and_bridges_are_added_and_revoked_while_the_node_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let admin =
        threadline_tests::field(&threadline_tests::threadline_ok(&data, &["init"]), "token:");
    let node = threadline_tests::Node::start(&data);
    // Added through the running node: its token works at once.
    let added = threadline_tests::threadline_ok(&data, &["agent", "add", "maria"]);
    let token = threadline_tests::field(&added, "token:");
    let (status, me) = node.get(&token, "/api/v1/me");
    assert_eq!((status, me["name"].as_str()), (200, Some("maria")), "{me}");
    let id = me["id"].as_str().expect("id").to_owned();
    let listed = threadline_tests::threadline_ok(&data, &["agent", "list"]);
    assert!(
        listed.lines().any(|line| line.starts_with(&id)
            && line.contains("active")
            && line.ends_with("maria")),
        "{listed}"
    );
    // Revoked through it: refused at once.
    let revoked = threadline_tests::threadline_ok(&data, &["agent", "revoke", &id]);
    assert!(
        revoked.contains(&format!("revoked agent {id}")),
        "{revoked}"
    );
    assert_eq!(node.get(&token, "/api/v1/me").0, 401);
    assert_eq!(node.get(&admin, "/api/v1/me").0, 200, "others keep theirs");
    // An admin added, given a new token, then made an agent only.
    let added = threadline_tests::threadline_ok(&data, &["agent", "add", "lee", "--admin"]);
    assert!(added.contains("(lee, admin)"), "{added}");
    let first = threadline_tests::field(&added, "token:");
    let lee = threadline_tests::field(&added, "agent:");
    let lee = lee.split_whitespace().next().expect("id").to_owned();
    let reset = threadline_tests::threadline_ok(&data, &["agent", "token", &lee]);
    let second = threadline_tests::field(&reset, "token:");
    assert_eq!(node.get(&first, "/api/v1/me").0, 401);
    let (_, lee_me) = node.get(&second, "/api/v1/me");
    assert_eq!(lee_me["role"], "admin");
    threadline_tests::threadline_ok(&data, &["agent", "role", &lee, "agent"]);
    let (_, lee_me) = node.get(&second, "/api/v1/me");
    assert_eq!(lee_me["role"], "agent");
    // The only admin left cannot be revoked: said once, nothing changed.
    let (_, admin_me) = node.get(&admin, "/api/v1/me");
    let admin_id = admin_me["id"].as_str().expect("id");
    let refused = run_threadline(&data, &["agent", "revoke", admin_id]);
    assert!(!refused.status.success());
    let lines = error_lines(&refused);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("the only admin left"), "{lines:?}");
    assert_eq!(node.get(&admin, "/api/v1/me").0, 200);
    // A bridge: its certificate is in the directory and its token opens the bridge API.
    let bridge = threadline_tests::threadline_ok(&data, &["bridge", "add", "sms"]);
    let bridge_token = threadline_tests::field(&bridge, "token:");
    assert_eq!(node.get(&bridge_token, "/api/v1/bridge/presence").0, 200);
    // A command the node refuses says why, once.
    let unknown = run_threadline(
        &data,
        &["agent", "revoke", "00000000000000000000000000000000"],
    );
    assert!(!unknown.status.success());
    let lines = error_lines(&unknown);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no agent"), "{lines:?}");
    node.stop();
    // Stopped, the same commands work on the folder directly.
    let listed = threadline_tests::threadline_ok(&data, &["agent", "list"]);
    assert!(
        listed.contains("revoked") && listed.contains("maria"),
        "{listed}"
    );
}
