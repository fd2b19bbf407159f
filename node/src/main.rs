//! The `threadline` binary: parses the command line, installs logging, and calls the node
//! library.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use threadline_node::DataDir;
use threadline_protocol::Timestamp;

/// Threadline: a federated, peer-to-peer messaging relay for businesses.
#[derive(Debug, Parser)]
#[command(name = "threadline", version, about)]
struct Cli {
    /// The node's data folder.
    #[arg(
        long,
        global = true,
        env = "THREADLINE_DATA_DIR",
        default_value = "threadline-data"
    )]
    data_dir: PathBuf,
    /// Log as JSON lines instead of readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new org and its first node in the data folder.
    Init,
    /// Print this node's public identity: org id, node id and libp2p PeerId.
    Identity,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    install_tracing(cli.log_json);
    let data_dir = DataDir::new(&cli.data_dir);
    match cli.command {
        Command::Init => {
            let identity = data_dir.init(&mut rand_core::OsRng, now()?)?;
            println!("Created a new org and node in {}", cli.data_dir.display());
            println!("org:     {}", identity.org);
            println!("node:    {}", identity.node_id());
            println!("peer id: {}", identity.peer_id());
            println!(
                "The org key is in {}: keep a copy somewhere safe and offline.",
                cli.data_dir.join("keys/org.key").display()
            );
        }
        Command::Identity => {
            let identity = data_dir.load_identity()?;
            println!("org:     {}", identity.org);
            println!("node:    {}", identity.node_id());
            println!("peer id: {}", identity.peer_id());
        }
    }
    Ok(())
}

fn now() -> anyhow::Result<Timestamp> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
    Ok(Timestamp::from_millis(u64::try_from(
        since_epoch.as_millis(),
    )?))
}

fn install_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
