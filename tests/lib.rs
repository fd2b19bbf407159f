//! Support for the end-to-end tests in `it/`: finding the real `threadline` binary and running
//! it in a temporary data folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
