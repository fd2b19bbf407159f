//! The `threadline` binary: parses the command line, installs logging, and calls the node
//! library.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use threadline_node::{admin, clock, config::Config, server, DataDir};
use threadline_protocol::{AgentId, ChannelKind};

/// mimalloc rather than the system's allocator: with the node's threads (writer, verifier,
/// sled's, tokio's) glibc's malloc took ~30% of the ingest writer's time, much of it in its
/// arena locks (docs/BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Create a new org and its first node in the data folder, with a first agent; or, with
    /// --join, a new node of an existing org.
    Init {
        /// An invite from `threadline org invite` on a node of the org: this node joins that
        /// org and takes its contact directory now, its threads when it runs.
        #[arg(long)]
        join: Option<String>,
    },
    /// Run the node (creating the data folder first if there is none).
    Run {
        /// Where the HTTP API listens (overrides config.toml).
        #[arg(long, env = "THREADLINE_API_LISTEN")]
        listen: Option<SocketAddr>,
        /// Where replication listens, a multiaddr (overrides config.toml; repeat or separate
        /// with commas for more).
        #[arg(long, env = "THREADLINE_P2P_LISTEN", value_delimiter = ',')]
        p2p_listen: Vec<String>,
        /// Where the email bridge takes mail over SMTP (overrides config.toml).
        #[arg(long, env = "THREADLINE_SMTP_LISTEN")]
        smtp_listen: Option<SocketAddr>,
    },
    /// Back the data folder up into DIR, a new folder a node can start from: while the node
    /// runs (it copies its store between two batches of requests, so the copy holds every
    /// request answered before it) or while it is stopped.
    Backup {
        /// The folder to create.
        dir: std::path::PathBuf,
    },
    /// Check a stopped node's data folder: the store opens, every event, thread record and
    /// attachment reads back whole. Exits 1, naming what is damaged, if anything is.
    Check,
    /// The org's nodes: invite a new one, remove one.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Peers this node keeps connected to (works while it runs).
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Partner orgs: their nodes may connect and get the threads shared with them (works while
    /// the node runs).
    Partner {
        #[command(subcommand)]
        command: PartnerCommand,
    },
    /// Print this node's public identity: org id, node id and libp2p PeerId.
    Identity,
    /// Manage agents (works while the node runs).
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Manage bridges (`add` works while the node runs).
    Bridge {
        #[command(subcommand)]
        command: BridgeCommand,
    },
    /// Show or export a contact's common record (works while the node runs).
    Contact {
        #[command(subcommand)]
        command: ContactCommand,
    },
    /// Erase personal data (works while the node runs).
    Erase {
        #[command(subcommand)]
        command: EraseCommand,
    },
    /// Show what the retention policy (`[retention]` in config.toml) erases now, and erase it
    /// with `--apply` (works while the node runs, which also applies it every hour).
    Retention {
        /// Erase it (signed erasures every node applies), not only show it.
        #[arg(long)]
        apply: bool,
    },
    /// Show the audit trail: who viewed, exported or erased a contact's record, and when
    /// (works while the node runs).
    Audit {
        /// Only this contact's entries (a contact id or a handle).
        #[arg(long)]
        contact: Option<String>,
    },
    /// Verify a contact export (`contact export`): its signature by the org and every file's
    /// hash. Needs no data folder: anyone can run it.
    VerifyExport {
        /// The export's folder.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Print a one-time invite for a new node (needs the org key; works while the node runs).
    /// On the new machine: `threadline init --join <invite>`.
    Invite {
        /// The address the new node reaches this one at (a multiaddr); by default the first
        /// of [replication] listen.
        #[arg(long)]
        address: Option<String>,
        /// Hours the invite stays valid.
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
    },
    /// Remove a node from the org: revoke its key everywhere (needs the org key; the node
    /// must be stopped).
    Remove {
        /// The node's id (`threadline identity` on it prints it).
        node: threadline_protocol::PublicKey,
    },
}

#[derive(Debug, Subcommand)]
enum PartnerCommand {
    /// Trust another org as a partner (its org id: `threadline identity` on one of its nodes).
    Add {
        /// The partner's org id.
        org: threadline_protocol::OrgId,
    },
    /// Stop trusting a partner org added with `partner add`: a running node disconnects its
    /// nodes within seconds and shares nothing more with them (one in config.toml is removed
    /// there).
    Remove {
        /// The partner's org id.
        org: threadline_protocol::OrgId,
    },
    /// List partner orgs (config.toml and added here).
    List,
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Add a peer: a multiaddr ending in /p2p/<PeerId>. A running node dials it within seconds.
    Add {
        /// The peer's address.
        address: String,
    },
    /// List the peers added here and in config.toml.
    List,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Add an agent and print its token (shown once).
    Add {
        /// Display name.
        name: String,
        /// An admin, who may also manage agents (in the inbox, or `/api/v1/agents`).
        #[arg(long)]
        admin: bool,
    },
    /// List agents.
    List,
    /// Revoke an agent and its tokens (not the only admin).
    Revoke {
        /// The agent's id.
        id: AgentId,
    },
    /// Give an agent a new token (printed once); its earlier tokens stop working.
    Token {
        /// The agent's id.
        id: AgentId,
    },
    /// Make an agent an admin, or an agent only (not the only admin).
    Role {
        /// The agent's id.
        id: AgentId,
        /// `admin` or `agent`.
        #[arg(value_parser = ["admin", "agent"])]
        role: String,
    },
}

/// What a standalone webhook bridge needs.
#[derive(Debug, clap::Args)]
struct WebhookBridgeArgs {
    /// The node's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7420")]
    node: String,
    /// The bridge token (`threadline bridge add <channel>`), or THREADLINE_BRIDGE_TOKEN.
    #[arg(long, env = "THREADLINE_BRIDGE_TOKEN", hide_env_values = true)]
    token: String,
    /// A file holding the bridge key in hex (`threadline bridge add <channel>`).
    #[arg(long)]
    key_file: std::path::PathBuf,
    /// A TOML file with the channel's section, as in a node's config.toml (`[whatsapp]`,
    /// `[messenger]`, `[instagram]`, `[telegram]`, `[slack]` or `[sms]`); the THREADLINE_<CHANNEL>_…
    /// variables override its secrets as for a node.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Where to serve the webhook (`/webhooks/<channel>`).
    #[arg(long, default_value = "127.0.0.1:7422")]
    listen: std::net::SocketAddr,
}

#[derive(Debug, Subcommand)]
enum BridgeCommand {
    /// Certify a new bridge key for a channel and print its key, certificate and token.
    Add {
        /// The channel (webchat, email, whatsapp, messenger, slack, telegram, sms, matrix, xmpp).
        channel: ChannelKind,
    },
    /// Run the WhatsApp bridge on its own, against a node's bridge API (leave the node's
    /// `[whatsapp]` unset so that only this bridge takes the WhatsApp queue).
    Whatsapp(WebhookBridgeArgs),
    /// Run the Messenger bridge on its own (leave the node's `[messenger]` unset).
    Messenger(WebhookBridgeArgs),
    /// Run the Instagram bridge on its own (leave the node's `[instagram]` unset).
    Instagram(WebhookBridgeArgs),
    /// Run the Telegram bridge on its own (leave the node's `[telegram]` unset).
    Telegram(WebhookBridgeArgs),
    /// Run the Slack bridge on its own (leave the node's `[slack]` unset).
    Slack(WebhookBridgeArgs),
    /// Run the SMS bridge on its own (leave the node's `[sms]` unset).
    Sms(WebhookBridgeArgs),
    /// The Matrix bridge (an application service of your homeserver).
    Matrix {
        #[command(subcommand)]
        command: MatrixCommand,
    },
    /// Run the XMPP bridge on its own, against a node's bridge API (leave the node's `[xmpp]`
    /// unset so that only this bridge takes the XMPP queue).
    Xmpp {
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:7420")]
        node: String,
        /// The bridge token (`threadline bridge add xmpp`), or THREADLINE_BRIDGE_TOKEN.
        #[arg(long, env = "THREADLINE_BRIDGE_TOKEN", hide_env_values = true)]
        token: String,
        /// A file holding the bridge key in hex (`threadline bridge add xmpp`).
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// A TOML file with an `[xmpp]` section, as in a node's config.toml;
        /// THREADLINE_XMPP_SECRET overrides its secret.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Run the web chat bridge on its own, against a node's bridge API (set the node's
    /// `[webchat] builtin = false` so that only this bridge takes the web chat queue).
    Webchat {
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:7420")]
        node: String,
        /// The bridge token (`threadline bridge add webchat`), or THREADLINE_BRIDGE_TOKEN.
        #[arg(long, env = "THREADLINE_BRIDGE_TOKEN", hide_env_values = true)]
        token: String,
        /// A file holding the bridge key in hex (`threadline bridge add webchat`).
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// Where to serve the widget and its WebSocket.
        #[arg(long, default_value = "127.0.0.1:7421")]
        listen: std::net::SocketAddr,
        /// A website allowed to embed the widget (repeat for more).
        #[arg(long = "allowed-origin")]
        allowed_origins: Vec<String>,
        /// The secret websites sign their users' identities with, or THREADLINE_WEBCHAT_IDENTITY_SECRET.
        #[arg(
            long,
            env = "THREADLINE_WEBCHAT_IDENTITY_SECRET",
            hide_env_values = true
        )]
        identity_secret: Option<String>,
        /// The widget's title (as `[webchat] title`).
        #[arg(long)]
        title: Option<String>,
        /// What the empty chat says (as `[webchat] greeting`).
        #[arg(long)]
        greeting: Option<String>,
        /// The widget's colour, `#rrggbb` (as `[webchat] color`).
        #[arg(long)]
        color: Option<String>,
        /// The corner of the page, `right` or `left` (as `[webchat] position`).
        #[arg(long)]
        position: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MatrixCommand {
    /// Write the application service registration for the homeserver (from config.toml's
    /// `[matrix]`; the tokens are made the first time, in keys/matrix-tokens).
    Registration {
        /// Where the homeserver reaches this node (its base URL, as the homeserver sees it).
        #[arg(long, default_value = "http://127.0.0.1:7420")]
        url: String,
        /// Write it to this file (else it is printed).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// For a standalone bridge: its TOML file with a `[matrix]` section and both tokens
        /// (instead of the node's config.toml and keys/matrix-tokens).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Run the Matrix bridge on its own, against a node's bridge API (leave the node's
    /// `[matrix]` unset so that only this bridge takes the Matrix queue).
    Run {
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:7420")]
        node: String,
        /// The bridge token (`threadline bridge add matrix`), or THREADLINE_BRIDGE_TOKEN.
        #[arg(long, env = "THREADLINE_BRIDGE_TOKEN", hide_env_values = true)]
        token: String,
        /// A file holding the bridge key in hex (`threadline bridge add matrix`).
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// A TOML file with a `[matrix]` section and both tokens
        /// (THREADLINE_MATRIX_AS_TOKEN and THREADLINE_MATRIX_HS_TOKEN override them).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Where the homeserver pushes transactions (the registration's `url`).
        #[arg(long, default_value = "127.0.0.1:7423")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum ContactCommand {
    /// Print a contact's common record as JSON.
    Show {
        /// A contact id or a handle (`email:alice@example.com`).
        contact: String,
    },
    /// Export a contact's whole common record, threads and files into a new folder, signed by
    /// the org (right of access and portability; `threadline verify-export` checks it).
    Export {
        /// A contact id or a handle.
        contact: String,
        /// The folder to write (new or empty).
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EraseCommand {
    /// Erase a contact: its directory record and the content of every event of its threads.
    /// Signed headers stay, so replicas stay verifiable.
    Contact {
        /// A contact id or a handle.
        contact: String,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The TCP address of a multiaddr such as `/ip4/127.0.0.1/tcp/7430` (`None` for others).
fn tcp_address(multiaddr: &str) -> Option<SocketAddr> {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    match parts.as_slice() {
        ["", "ip4" | "ip6", ip, "tcp", port] => {
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        }
        _ => None,
    }
}

/// An error and its causes on one line, each cause once: a cause whose text the line holds
/// already (an error that prints its source) is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    install_tracing(cli.log_json);
    let data_dir = DataDir::new(&cli.data_dir);
    match cli.command {
        Command::Init { join: None } => {
            let initialised = admin::init(&data_dir, clock::now())?;
            print_init(&cli.data_dir, &initialised);
        }
        Command::Backup { dir } => {
            let to = std::path::absolute(&dir)?;
            let bytes = backup(&data_dir, &to)?;
            println!(
                "backed up {} into {} ({bytes} bytes of store copied; attachments linked where they could be)",
                cli.data_dir.display(),
                to.display()
            );
        }
        Command::Check => {
            let store = admin::open_store(&data_dir)?;
            let report = store.check()?;
            println!(
                "{}: {} events, {} threads, {} attachments read",
                cli.data_dir.display(),
                report.events,
                report.threads,
                report.attachments
            );
            if !report.damaged.is_empty() {
                for line in &report.damaged {
                    println!("damaged: {line}");
                }
                anyhow::bail!(
                    "{} damaged: restore the data folder from a backup (docs/OPERATIONS.md)",
                    report.damaged.len()
                );
            }
            println!("ok: nothing is damaged");
        }
        Command::Init { join: Some(text) } => {
            let invite = threadline_node::replication::invite::Invite::from_text(&text)?;
            let now = clock::now();
            let runtime = tokio::runtime::Runtime::new()?;
            let joined = runtime.block_on(threadline_node::replication::join::join(
                &invite,
                now,
                std::time::Duration::from_secs(60),
            ))?;
            let n_events = joined.directory.len();
            let initialised = admin::init_joined(&data_dir, joined, &invite.address, now)?;
            let identity = &initialised.identity;
            println!("Joined org {} in {}", identity.org, cli.data_dir.display());
            println!("node:    {}", identity.node_id());
            println!("peer id: {}", identity.peer_id());
            println!("directory: {n_events} events; threads follow when the node runs");
            println!(
                "agent:   {} ({})",
                initialised.first_agent.agent.id, initialised.first_agent.agent.name
            );
            println!("token:   {}", initialised.first_agent.token);
            println!("The agent token is shown once; the node keeps only its hash.");
        }
        Command::Org {
            command:
                OrgCommand::Invite {
                    address,
                    valid_hours,
                },
        } => {
            let identity = data_dir.load_identity()?;
            let address = match address {
                Some(address) => address,
                None => {
                    let config = Config::load(&data_dir.config_path(), None)?;
                    let listen = config
                        .replication_listen
                        .first()
                        .context("[replication] listen is empty: give --address")?;
                    let port_zero = listen
                        .iter()
                        .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(0)));
                    anyhow::ensure!(
                        !port_zero,
                        "[replication] listen has port 0: give --address with the port the node listens on"
                    );
                    listen.to_string()
                }
            };
            let address: libp2p::Multiaddr = address
                .parse()
                .with_context(|| format!("`{address}` is not a multiaddr"))?;
            let address = if threadline_node::identity::peer_of(&address).is_some() {
                address
            } else {
                address.with(libp2p::multiaddr::Protocol::P2p(identity.peer_id()))
            };
            let now = clock::now();
            let invite = admin::invite(
                &data_dir,
                address.to_string(),
                now.saturating_add_millis(valid_hours.saturating_mul(3600 * 1000)),
            )?;
            println!("{}", invite.to_text());
            eprintln!(
                "One-time invite to org {}, valid {valid_hours} h. On the new machine: threadline init --join <invite>",
                identity.org
            );
        }
        Command::Org {
            command: OrgCommand::Remove { node },
        } => {
            admin::remove_node(&data_dir, node, clock::now())?;
            println!("removed node {node}: its key is revoked; every node refuses it once this reaches them");
        }
        Command::Peer {
            command: PeerCommand::Add { address },
        } => {
            let address =
                threadline_node::config::peer_address(&address).map_err(anyhow::Error::msg)?;
            DataDir::append_to_list(&data_dir.peers_path(), &address.to_string())?;
            println!("added peer {address}");
        }
        Command::Partner {
            command: PartnerCommand::Add { org },
        } => {
            DataDir::append_to_list(&data_dir.partners_path(), &org.to_string())?;
            println!("added partner org {org}");
        }
        Command::Partner {
            command: PartnerCommand::Remove { org },
        } => {
            if DataDir::remove_from_list(&data_dir.partners_path(), &org.to_string())? {
                println!("removed partner org {org}: a running node disconnects its nodes within seconds");
            } else {
                let config = Config::load(&data_dir.config_path(), None)?;
                if config.replication_partners.contains(&org) {
                    anyhow::bail!("partner org {org} is in config.toml ([replication] partners): remove it there and restart the node");
                }
                anyhow::bail!("{org} is not a partner org added with `threadline partner add`");
            }
        }
        Command::Partner {
            command: PartnerCommand::List,
        } => {
            let config = Config::load(&data_dir.config_path(), None)?;
            for org in &config.replication_partners {
                println!("{org}  (config.toml)");
            }
            for org in DataDir::read_list(&data_dir.partners_path()) {
                println!("{org}");
            }
        }
        Command::Peer {
            command: PeerCommand::List,
        } => {
            let config = Config::load(&data_dir.config_path(), None)?;
            for address in &config.replication_peers {
                println!("{address}  (config.toml)");
            }
            for address in DataDir::read_list(&data_dir.peers_path()) {
                println!("{address}");
            }
        }
        Command::Run {
            listen,
            p2p_listen,
            smtp_listen,
        } => {
            let is_new = std::fs::read_dir(&cli.data_dir)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(true);
            // A new node's ports are checked before an org is made for it: a port in use
            // fails here, with nothing created and no token printed.
            let bound_early = if is_new {
                let api = match listen {
                    Some(address) => address,
                    None => threadline_node::config::DEFAULT_API_LISTEN.parse()?,
                };
                let listener = std::net::TcpListener::bind(api)
                    .with_context(|| format!("cannot listen on {api}"))?;
                let p2p = match p2p_listen.first() {
                    Some(text) => text.clone(),
                    None => threadline_node::config::DEFAULT_P2P_LISTEN.to_owned(),
                };
                if let Some(address) = tcp_address(&p2p) {
                    drop(
                        std::net::TcpListener::bind(address)
                            .with_context(|| format!("cannot listen on {p2p} for replication"))?,
                    );
                }
                Some(listener)
            } else {
                None
            };
            if is_new {
                let initialised = admin::init(&data_dir, clock::now())?;
                print_init(&cli.data_dir, &initialised);
            }
            let mut config = Config::load(&data_dir.config_path(), listen)?;
            if let Some(smtp_listen) = smtp_listen {
                config.email_smtp_listen = smtp_listen;
            }
            if !p2p_listen.is_empty() {
                config.replication_listen = p2p_listen
                    .iter()
                    .map(|text| {
                        text.parse()
                            .with_context(|| format!("--p2p-listen: `{text}` is not a multiaddr"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                // First: a data folder another process holds fails here, before anything is
                // bound or a listening address printed.
                let opened = server::open(&data_dir)?;
                let listener = match bound_early {
                    Some(listener) => {
                        listener.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(listener)?
                    }
                    None => tokio::net::TcpListener::bind(config.api_listen)
                        .await
                        .with_context(|| format!("cannot listen on {}", config.api_listen))?,
                };
                let address = listener.local_addr()?;
                let shutdown = shutdown_signal()?;
                let smtp = match &config.email_address {
                    Some(support) => {
                        let smtp = tokio::net::TcpListener::bind(config.email_smtp_listen)
                            .await
                            .with_context(|| {
                                format!("cannot listen on {} for SMTP", config.email_smtp_listen)
                            })?;
                        println!(
                            "email: SMTP listening on {} for {support}",
                            smtp.local_addr()?
                        );
                        Some(smtp)
                    }
                    None => None,
                };
                println!("threadline listening on http://{address}");
                println!("inbox: http://{address}/inbox");
                println!("agent API: http://{address}/api/v1");
                std::io::stdout().flush()?;
                server::serve(opened, &config, listener, smtp, shutdown).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Identity => {
            let identity = data_dir.load_identity()?;
            println!("org:     {}", identity.org);
            println!("node:    {}", identity.node_id());
            println!("peer id: {}", identity.peer_id());
        }
        Command::Agent { command } => {
            use threadline_node::admin_requests::AdminCommand;
            use threadline_node::store::AgentRole;
            let command = match command {
                AgentCommand::Add { name, admin } => AdminCommand::AddAgent {
                    name,
                    role: if admin {
                        AgentRole::Admin
                    } else {
                        AgentRole::Agent
                    },
                },
                AgentCommand::List => AdminCommand::ListAgents,
                AgentCommand::Revoke { id } => AdminCommand::RevokeAgent { id },
                AgentCommand::Token { id } => AdminCommand::ResetToken { id },
                AgentCommand::Role { id, role } => AdminCommand::SetRole {
                    id,
                    role: AgentRole::from_name(&role).unwrap_or(AgentRole::Agent),
                },
            };
            let printed =
                threadline_node::admin_requests::carry_out(&data_dir, &command, clock::now())?;
            if !printed.is_empty() {
                println!("{printed}");
            }
        }
        Command::Bridge {
            command: BridgeCommand::Add { channel },
        } => {
            let command = threadline_node::admin_requests::AdminCommand::AddBridge { channel };
            println!(
                "{}",
                threadline_node::admin_requests::carry_out(&data_dir, &command, clock::now())?
            );
        }
        Command::Bridge {
            command:
                BridgeCommand::Webchat {
                    node,
                    token,
                    key_file,
                    listen,
                    allowed_origins,
                    identity_secret,
                    title,
                    greeting,
                    color,
                    position,
                },
        } => {
            let look =
                threadline_node::api::webchat::WidgetLook::new(title, greeting, color, position)
                    .map_err(anyhow::Error::msg)?;
            let seed = read_key_file(&key_file)?;
            for origin in &allowed_origins {
                threadline_node::config::check_origin(origin).map_err(anyhow::Error::msg)?;
            }
            let identity_secret = threadline_node::config::identity_secret(identity_secret)
                .map_err(anyhow::Error::msg)?;
            let settings = threadline_node::standalone::StandaloneWebchat {
                node,
                token,
                key: threadline_protocol::SecretKey::from_seed(seed),
                allowed_origins,
                identity_secret,
                look,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let address = listener.local_addr()?;
                let shutdown = shutdown_signal()?;
                println!("web chat bridge listening on http://{address}");
                println!("widget: http://{address}/webchat/widget.js, demo: http://{address}/webchat/demo");
                std::io::stdout().flush()?;
                threadline_node::standalone::run_webchat(settings, listener, shutdown).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Bridge {
            command:
                BridgeCommand::Matrix {
                    command: MatrixCommand::Registration { url, out, config },
                },
        } => {
            let yaml = match config {
                Some(path) => {
                    let matrix = threadline_node::config::load_matrix_section(&path)?;
                    let tokens = matrix.tokens.clone().ok_or_else(|| {
                        anyhow::anyhow!("{}: the [matrix] tokens are not set", path.display())
                    })?;
                    matrix
                        .settings(&tokens)
                        .map_err(anyhow::Error::msg)?
                        .registration(&url)
                }
                None => {
                    let config = Config::load(&data_dir.config_path(), None)?;
                    let matrix = config.matrix.ok_or_else(|| {
                        anyhow::anyhow!("config.toml has no [matrix] homeserver: set it first")
                    })?;
                    threadline_node::matrix::registration(&data_dir, &matrix, &url)
                        .map_err(anyhow::Error::msg)?
                }
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("registration written to {}", path.display());
                }
                None => print!("{yaml}"),
            }
        }
        Command::Bridge {
            command:
                BridgeCommand::Matrix {
                    command:
                        MatrixCommand::Run {
                            node,
                            token,
                            key_file,
                            config,
                            listen,
                        },
                },
        } => {
            let seed = read_key_file(&key_file)?;
            let config = threadline_node::config::load_matrix_section(&config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let address = listener.local_addr()?;
                let shutdown = shutdown_signal()?;
                println!("matrix bridge listening on http://{address}");
                std::io::stdout().flush()?;
                threadline_node::standalone::run_matrix(
                    &node,
                    &token,
                    threadline_protocol::SecretKey::from_seed(seed),
                    &config,
                    listener,
                    shutdown,
                )
                .await
                .map_err(anyhow::Error::msg)?;
                anyhow::Ok(())
            })?;
        }
        Command::Bridge {
            command:
                BridgeCommand::Xmpp {
                    node,
                    token,
                    key_file,
                    config,
                },
        } => {
            let seed = read_key_file(&key_file)?;
            let config = threadline_node::config::load_xmpp_section(&config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let shutdown = shutdown_signal()?;
                println!(
                    "xmpp bridge: component {} on {}",
                    config.component, config.server
                );
                std::io::stdout().flush()?;
                threadline_node::standalone::run_xmpp(
                    &node,
                    &token,
                    threadline_protocol::SecretKey::from_seed(seed),
                    &config,
                    shutdown,
                )
                .await
                .map_err(anyhow::Error::msg)?;
                anyhow::Ok(())
            })?;
        }
        Command::Bridge {
            command:
                command @ (BridgeCommand::Whatsapp(_)
                | BridgeCommand::Messenger(_)
                | BridgeCommand::Instagram(_)
                | BridgeCommand::Telegram(_)
                | BridgeCommand::Slack(_)
                | BridgeCommand::Sms(_)),
        } => {
            let (channel, args) = match command {
                BridgeCommand::Whatsapp(args) => (ChannelKind::Whatsapp, args),
                BridgeCommand::Messenger(args) => (ChannelKind::Messenger, args),
                BridgeCommand::Instagram(args) => (ChannelKind::Instagram, args),
                BridgeCommand::Telegram(args) => (ChannelKind::Telegram, args),
                BridgeCommand::Slack(args) => (ChannelKind::Slack, args),
                BridgeCommand::Sms(args) => (ChannelKind::Sms, args),
                _ => unreachable!("matched above"),
            };
            let seed = read_key_file(&args.key_file)?;
            use threadline_node::standalone::WebhookChannel;
            let config = match channel {
                ChannelKind::Telegram => WebhookChannel::Telegram(
                    threadline_node::config::load_telegram_section(&args.config)?,
                ),
                ChannelKind::Slack => WebhookChannel::Slack(
                    threadline_node::config::load_slack_section(&args.config)?,
                ),
                ChannelKind::Sms => {
                    WebhookChannel::Sms(threadline_node::config::load_sms_section(&args.config)?)
                }
                _ => WebhookChannel::Meta(
                    channel,
                    threadline_node::config::load_meta_section(&args.config, channel)?,
                ),
            };
            let settings = threadline_node::standalone::StandaloneWebhook {
                node: args.node,
                token: args.token,
                key: threadline_protocol::SecretKey::from_seed(seed),
                channel: config,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?;
                let address = listener.local_addr()?;
                let shutdown = shutdown_signal()?;
                println!("{channel} bridge listening on http://{address}");
                println!("webhook: http://{address}/webhooks/{channel}");
                std::io::stdout().flush()?;
                threadline_node::standalone::run_webhook(settings, listener, shutdown)
                    .await
                    .map_err(anyhow::Error::msg)?;
                anyhow::Ok(())
            })?;
        }
        command @ (Command::Contact { .. }
        | Command::Retention { .. }
        | Command::Audit { .. }
        | Command::Erase { .. }) => {
            use threadline_node::operator::RecordCommand;
            let command = match command {
                Command::Contact {
                    command: ContactCommand::Show { contact },
                } => RecordCommand::ShowContact { contact },
                Command::Contact {
                    command: ContactCommand::Export { contact, to },
                } => RecordCommand::ExportContact {
                    contact,
                    // The running node writes it, from a working folder of its own.
                    to: std::path::absolute(&to)
                        .with_context(|| format!("--to {}", to.display()))?,
                },
                Command::Erase {
                    command: EraseCommand::Contact { contact },
                } => RecordCommand::EraseContact { contact },
                Command::Retention { apply } => RecordCommand::Retention { apply },
                Command::Audit { contact } => RecordCommand::Audit { contact },
                _ => unreachable!("matched above"),
            };
            let command = threadline_node::admin_requests::AdminCommand::Records(command);
            println!(
                "{}",
                threadline_node::admin_requests::carry_out(&data_dir, &command, clock::now())?
            );
        }
        Command::VerifyExport { dir } => {
            let verified = threadline_node::export::verify(&dir)?;
            println!(
                "verified: the export of contact {} by org {}, {} files, signed by {} on {}",
                verified.manifest.contact,
                verified.manifest.org,
                verified.manifest.files.len(),
                if verified.by_org_key {
                    "the org key".to_owned()
                } else {
                    format!("node key {} (certified by the org)", verified.signer)
                },
                verified.manifest.created_at
            );
        }
    }
    Ok(())
}

fn print_init(data_dir: &std::path::Path, initialised: &admin::Initialised) {
    let identity = &initialised.identity;
    println!("Created a new org and node in {}", data_dir.display());
    println!("org:     {}", identity.org);
    println!("node:    {}", identity.node_id());
    println!("peer id: {}", identity.peer_id());
    println!(
        "agent:   {} ({})",
        initialised.first_agent.agent.id, initialised.first_agent.agent.name
    );
    println!("token:   {}", initialised.first_agent.token);
    println!("The agent token is shown once; the node keeps only its hash.");
    println!(
        "The org key is in {}: keep a copy somewhere safe and offline.",
        data_dir.join("keys/org.key").display()
    );
    let storage_key = if std::env::var_os(admin::STORAGE_KEY_VAR).is_some() {
        format!("given by {}", admin::STORAGE_KEY_VAR)
    } else {
        let path = std::env::var_os(admin::STORAGE_KEY_FILE_VAR)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| data_dir.join("keys/storage.key"));
        format!("in {}", path.display())
    };
    println!(
        "The storage key, which opens what customers write, is {storage_key}: keep a copy with the org key (without it the data is lost)."
    );
}

/// Notes the operator's `action` on `contact` in the audit trail, durably.
/// Registers SIGINT and SIGTERM handlers at once, so a signal that arrives any time after the
/// node has printed its address stops it cleanly; the returned future ends on the first one.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            // If the handler cannot be installed, the node still stops when killed.
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// `threadline backup`: directly on a stopped node's store, or by asking the running node
/// (a request file it answers within a second or so) and waiting for its answer.
fn backup(data_dir: &DataDir, to: &std::path::Path) -> anyhow::Result<u64> {
    match admin::open_store(data_dir) {
        Ok(store) => {
            data_dir
                .claim_backup_folder(to)
                .map_err(|err| anyhow::anyhow!(err))?;
            let copied = data_dir
                .copy_besides_store(to)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(store.backup(&to.join("store"))?));
            if copied.is_err() {
                let _ = std::fs::remove_dir_all(to);
            }
            copied
        }
        Err(threadline_node::store::StoreError::InUse { .. }) => {
            eprintln!("the node is running: asked it for the backup");
            let answer = threadline_node::admin_requests::ask(
                &data_dir.backup_requests_path(),
                &to.to_string_lossy(),
                std::time::Duration::from_secs(60 * 60),
            )
            .map_err(|err| anyhow::anyhow!("the node could not back up: {err}"))?;
            Ok(answer.trim().parse().unwrap_or(0))
        }
        Err(err) => Err(err.into()),
    }
}

fn install_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A bridge key file: 32 bytes in hex.
fn read_key_file(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("{} does not hold 32 bytes of hex", path.display()))
}
