//! `tributary`: the command line. Each subcommand resolves its configuration and calls one
//! library entry point; errors are reported once, here, with their whole cause chain.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// mimalloc: capture and apply allocate many small, short-lived values (row values, column
/// maps) on one thread and free them on another (the sealing worker); glibc's allocator
/// spends much of capture's time on that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tributary::config::{Config, InFile, TransportKind};
use tributary::demo::{DemoOptions, run_demo};
use tributary::integration_publisher::IntegrationPublisher;
use tributary::kafka_apply::KafkaApplier;
use tributary::metrics_endpoint::MetricsEndpoint;
use tributary::{report, seed_progress, verify};
use tributary_kafka::{RunMode, ShipperProgress, TopicInit};
use tributary_schema::GLOBAL_PROPERTY;

/// Change-data capture from OpenMRS field sites into an HQ database: capture at the site,
/// apply at HQ, parking rows until their parents arrive.
#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about,
    after_help = "A site: `keys generate`, then `doctor`, then `seed` (once), then `capture`.\n\
                  HQ: copy every site's key into the key directory, then `apply`; `status` and \
                  `verify --site ID` show how far each site is and whether HQ matches it; \
                  `resend` (at the site) sends rows verify found missing or different again.\n\
                  Passwords come from files or the environment (see README.md), never from the \
                  command line. RUST_LOG sets the log level (default info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage site keys (each site seals its batches with its own key).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check everything capture needs at a site (server settings, privileges, key, directories,
    /// schema map); print the fix for each failure. Exit code 2 when a check fails.
    Doctor {
        /// Configuration file with [site] and [transport] sections.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Stream the site's binlog into sealed batches (runs until SIGINT/SIGTERM).
    Capture {
        /// Configuration file with [site] and [transport] sections.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Send the site's committed batches from the spool to Kafka, removing each once the
    /// broker acknowledged it (runs until SIGINT/SIGTERM). Needs `[transport] kind = "kafka"`.
    Ship {
        /// Configuration file with [site] and [transport] (kind = "kafka") sections.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Kafka transport administration.
    Kafka {
        #[command(subcommand)]
        command: KafkaCommand,
    },
    /// Send the site's existing rows (or chosen tables again) through a consistent snapshot.
    /// On a new site, run it before `capture`: the stream then starts exactly at the snapshot.
    ///
    /// The clinic is not blocked (MariaDB: no lock). Tables go parents first, in chunks of
    /// `[site] seed_chunk_rows` (default 2000), with progress bars on a terminal and a log line
    /// per table otherwise. Killed or failed, run it again: it goes on from its last durable
    /// chunk.
    Seed {
        /// The configuration file (TOML); see README.md for its sections.
        #[arg(long, short)]
        config: PathBuf,
        /// Only these tables (comma-separated), e.g. to re-send rows HQ is waiting for.
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Start the site's stream again at this seed's snapshot, in a new epoch: the remedy
        /// when capture reports that the binlog its checkpoint points into was purged, or when
        /// the spool was lost. Every row is sent again (HQ matches them by identity, so nothing
        /// is duplicated); rows deleted at the site while the stream was broken stay at HQ
        /// until removed by hand (`tributary verify --site ID --extra` lists them).
        #[arg(long, conflicts_with = "tables")]
        restart_stream: bool,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Apply batches from all sites into HQ (runs until SIGINT/SIGTERM).
    ///
    /// With an `[hq.refresh]` section (off by default), HQ OpenMRS is then asked through its
    /// REST API to refresh its search index and entity cache for what was written:
    /// `base_url` (e.g. "https://hq.example/openmrs"), `username`, and `password_file` or
    /// `password_env`; calls are coalesced per resource type every `flush_interval_ms`,
    /// retried `max_attempts` times, and never hold up or undo applying (README.md).
    ///
    /// With an `[hq.console]` section (off by default), it also serves the admin console on
    /// `listen` (default 127.0.0.1:8470): sites, parked rows, conflicts side by side with the
    /// actions to resolve them, rejected batches; people sign in with the token in
    /// `token_file`.
    ///
    /// With an `[hq.integration]` section (off by default), every change HQ applies is also
    /// published on Kafka in the Debezium envelope: `<topic_prefix>.<database>.<table>` keyed
    /// by the row's identity, and BEGIN/END events on `<topic_prefix>.transaction`; columns
    /// listed under `[hq.integration.mask]` are hashed or left out
    /// (docs/integration-topics.md).
    Apply {
        /// Configuration file with [hq] and [transport] sections.
        #[arg(long, short)]
        config: PathBuf,
        /// Apply what is there now, retry every parked row once, then exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Write the site's committed batches (or a sequence range) into one file a person can
    /// carry to HQ, for a site with no link. The batches stay in the outbox.
    Export(tributary::export::ExportArgs),
    /// At HQ, place the batches of carried files into the inbox and apply them (any order,
    /// any number of times; damaged batches are reported and left out).
    Import(tributary::import::ImportArgs),
    /// Status: at the site, capture's checkpoint (GTID and binlog file/position, resume
    /// mode); at HQ, per site: sequence applied, rows applied and parked, rejections, lag.
    /// A file with both sections shows both.
    Status {
        /// The configuration file (TOML); see README.md for its sections.
        #[arg(long, short)]
        config: PathBuf,
        /// Also list up to this many parked rows with what they wait for.
        #[arg(long, default_value_t = 0)]
        parked: u32,
        /// Print one JSON object for scripts instead of the tables (fields in README.md).
        #[arg(long)]
        json: bool,
    },
    /// At HQ, list, inspect, retry or drop parked rows (rows waiting for their parents, or
    /// refused by HQ), with what each waits for and which site should send it.
    Parked {
        #[command(subcommand)]
        command: tributary::parked::ParkedCommand,
    },
    /// At HQ, list, inspect and resolve conflicts: site changes to rows that were edited at
    /// HQ, or written from another site, since that site last wrote them.
    Conflicts {
        #[command(subcommand)]
        command: tributary::conflicts::ConflictsCommand,
    },
    /// Compare HQ with a site table by table, by identity: rows missing at HQ, rows that
    /// differ (with the columns, never the values) and, with --extra, rows HQ holds that the
    /// site lacks. Exit code 3 when they differ.
    ///
    /// Rows are compared by a hash of their travelling columns with every reference taken as
    /// the referenced row's identity, so HQ's own ids never matter. Tables are streamed and
    /// compared a page at a time (bounded memory at any size). Run it when HQ has caught up
    /// (`tributary status`): rows changed while it runs may show as different.
    #[command(
        after_help = "Typical repair, when HQ lost or changed rows of a site:\n  \
        tributary verify --site clinic-a --config site-and-hq.toml --out diff.tsv\n  \
        tributary resend --config site.toml --from-file diff.tsv      (at the site, capture stopped)\n  \
        tributary verify --site clinic-a --config site-and-hq.toml    (once HQ applied them)"
    )]
    Verify {
        /// Configuration file with [site] and [hq] sections.
        #[arg(long, short)]
        config: PathBuf,
        /// The site to compare; must be the configuration's [site] id. With it, every synced
        /// table is compared; without it, only the clinical core (person .. obs).
        #[arg(long, value_name = "ID")]
        site: Option<String>,
        /// Only these tables (comma-separated).
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Print the identities (uuids or natural keys) of missing, extra and different rows,
        /// up to --limit per table.
        #[arg(long)]
        list: bool,
        /// Rows listed per table with --list.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Write every missing, extra and different row's identity to this file (one per
        /// line, tab-separated); `tributary resend --from-file` takes it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Also report rows HQ holds that the site lacks. HQ keeps no record of which site
        /// wrote a row, so use it only where HQ's rows of the compared tables all come from
        /// this site (a single-site HQ, tables only this site writes); otherwise other sites'
        /// and HQ's own rows count as extra. Without it, extra rows are not checked ("-").
        #[arg(long)]
        extra: bool,
        /// Rows compared per page (the bound on what verify holds of a table at once).
        #[arg(long, default_value_t = tributary::verify::VERIFY_PAGE_ROWS, hide = true)]
        page_rows: usize,
    },
    /// At the site, send chosen rows again (e.g. those `verify --out` listed) as new batches:
    /// read by identity from the site database as they are now, sealed and numbered like
    /// every batch, applied once at HQ by identity. Stop `capture` first (they share the
    /// state directory); requested rows the site no longer holds are listed and nothing is
    /// sent for them (no delete: HQ cannot tell whose row it is).
    #[command(
        after_help = "Example, after 'tributary verify --site clinic-a --out diff.tsv' at HQ:\n  \
        tributary resend --config site.toml --from-file diff.tsv\n  \
        tributary resend --config site.toml --table obs --identity 5a1c0d2e-...\n\
        Then start capture again. A re-sent row replaces HQ's version of it (upsert by \
        identity), edits made at HQ included."
    )]
    Resend {
        /// Configuration file with [site] and [transport] sections.
        #[arg(long, short)]
        config: PathBuf,
        /// The table of the rows given with --identity.
        #[arg(long, requires = "identity")]
        table: Option<String>,
        /// Identities of rows of --table: uuids (any case), or natural keys as verify prints
        /// them (a JSON array).
        #[arg(long, num_args = 1.., requires = "table")]
        identity: Vec<String>,
        /// A file written by `tributary verify --out` (missing and different rows are sent,
        /// extra rows are not at the site and are skipped), or lines `table<TAB>identity`.
        #[arg(long, value_name = "FILE", required_unless_present = "table")]
        from_file: Option<PathBuf>,
    },
    /// Show how a live database's tables are identified and which columns travel as
    /// references (the resolved schema map), flagging tables whose rows cannot be identified.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Run the whole pipeline on two local MariaDB instances (see deploy/demo.sh).
    Demo {
        /// Env file of the site instance (written by `deploy/mariadb.sh start`).
        #[arg(long)]
        site_env: PathBuf,
        /// Env file of the HQ instance.
        #[arg(long)]
        hq_env: PathBuf,
        /// Where keys, state, batches and the configuration go.
        #[arg(long)]
        work_dir: PathBuf,
        /// Patients loaded before capture starts (they reach HQ by seed).
        #[arg(long, default_value_t = 200)]
        patients: u64,
        /// Patients registered while capture runs.
        #[arg(long, default_value_t = 20)]
        live_patients: u64,
    },
}

/// The `/metrics` endpoint of the long-running commands.
#[derive(Args)]
struct MetricsArgs {
    /// Serve Prometheus metrics (GET /metrics) on this IP:port, e.g. 127.0.0.1:9464 (port 0:
    /// any free port, logged); overrides [metrics] listen. Off when neither is given.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print the resolved schema map of the site database (or HQ's, with --hq).
    Show {
        /// The configuration file (TOML); see README.md for its sections.
        #[arg(long, short)]
        config: PathBuf,
        /// Read HQ's database instead of the site's.
        #[arg(long)]
        hq: bool,
    },
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Create the sync topic with the configured partitions and replication factor (an
    /// existing topic is fine; one with fewer partitions is reported).
    Init {
        /// Configuration file with a [transport.kafka] section.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new key for a site; the file is readable by its owner only. Copy it to the
    /// HQ key directory too.
    Generate {
        #[arg(long)]
        site: String,
        /// Directory to write `<site>-<key id>.key` into.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tributary::allocator::configure();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keys {
            command: KeysCommand::Generate { site, out_dir },
        } => {
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let key = tributary_batch::SiteKey::generate(&site)?;
            let path = out_dir.join(key.file_name());
            key.write_new(&path)?;
            println!("{}", path.display());
            eprintln!(
                "key {} for site {site} written; copy it to HQ's key directory as well",
                key.key_id()
            );
        }
        Command::Doctor { config } => {
            let (report, healthy) = tributary::doctor::run_doctor(&Config::load(&config)?).await?;
            print!("{report}");
            if !healthy {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Capture { config, metrics } => {
            let config = Config::load(&config)?;
            let settings = config.capture_settings().in_file(&config)?;
            tributary_capture::metrics::register();
            let endpoint = serve_metrics(&config, &metrics).await?;
            let shutdown = CancellationToken::new();
            until_signal(
                &shutdown,
                tributary_capture::run_capture(settings, shutdown.clone()),
            )
            .await?;
            stop_metrics(endpoint).await;
        }
        Command::Seed {
            config,
            tables,
            restart_stream,
            metrics,
        } => {
            let config = Config::load(&config)?;
            let settings = config.capture_settings().in_file(&config)?;
            tributary_capture::metrics::register();
            tributary_capture::metrics::register_seed();
            let endpoint = serve_metrics(&config, &metrics).await?;
            let options = tributary_capture::SeedOptions {
                tables,
                restart_stream,
            };
            let mut display = seed_progress::SeedDisplay::on_stderr();
            let report =
                tributary_capture::run_seed(&settings, &options, |status| display.update(status))
                    .await?;
            display.finish();
            if report.resumed {
                println!(
                    "went on with an interrupted seed: {} rows had been sent before",
                    report.rows_before
                );
            }
            if report.new_stream {
                println!(
                    "the site's stream starts at this snapshot (epoch {})",
                    report.epoch
                );
            }
            println!(
                "seeded {} rows from {} tables as batches {}..{}; snapshot at GTID {}",
                report.rows,
                report.tables,
                report.first_sequence,
                report.next_sequence.saturating_sub(1),
                if report.snapshot_position.is_empty() {
                    "(empty)"
                } else {
                    &report.snapshot_position
                }
            );
            stop_metrics(endpoint).await;
        }
        Command::Ship { config, metrics } => {
            let config = Config::load(&config)?;
            tributary_kafka::metrics::register();
            let endpoint = serve_metrics(&config, &metrics).await?;
            ship(&config).await?;
            stop_metrics(endpoint).await;
        }
        Command::Kafka {
            command: KafkaCommand::Init { config },
        } => {
            let kafka = Config::load(&config)?.kafka_settings()?;
            match tributary_kafka::init_topic(&kafka).await? {
                TopicInit::Created { partitions } => {
                    println!("created topic {} with {partitions} partitions", kafka.topic)
                }
                TopicInit::Existed { partitions } => {
                    println!("topic {} exists with {partitions} partitions", kafka.topic)
                }
                TopicInit::FewerPartitions {
                    partitions,
                    configured,
                } => println!(
                    "topic {} exists with {partitions} partitions, fewer than the {configured} \
                     configured: sites spread over at most {partitions} appliers",
                    kafka.topic
                ),
            }
        }
        Command::Apply {
            config,
            once,
            metrics,
        } => {
            let config = Config::load(&config)?;
            let settings = config.apply_settings().in_file(&config)?;
            tributary_apply::metrics::register(&settings.keyring);
            if config.transport_kind() == TransportKind::Kafka {
                tributary_kafka::metrics::register_consumer();
            }
            let refresher = settings.refresh.clone();
            let endpoint = serve_metrics(&config, &metrics).await?;
            let console = match config.console_settings().in_file(&config)? {
                Some(console) => Some(tributary::console::ConsoleServer::start(console).await?),
                None => None,
            };
            let publisher = match config.integration_settings().in_file(&config)? {
                Some(integration) => Some(IntegrationPublisher::start(integration).await?),
                None => None,
            };
            if config.transport_kind() == TransportKind::Kafka {
                apply_from_kafka(&config, settings, once).await?;
            } else if once {
                let mut applier = tributary_apply::Applier::connect(settings).await?;
                report::apply_once(&mut applier).await?;
            } else {
                let shutdown = CancellationToken::new();
                until_signal(
                    &shutdown,
                    tributary_apply::run_apply(settings, shutdown.clone()),
                )
                .await?;
            }
            if let Some(refresher) = refresher {
                // What the last batches wrote is still named to HQ OpenMRS (bounded).
                refresher.close(tributary_apply::REFRESH_CLOSE_WITHIN).await;
            }
            if let Some(publisher) = publisher {
                // `--once` publishes what it applied before it exits.
                publisher.finish(once).await;
            }
            if let Some(console) = console {
                console.stop().await;
            }
            stop_metrics(endpoint).await;
        }
        Command::Export(args) => return tributary::export::run(&args),
        Command::Import(args) => return tributary::import::run(&args).await,
        Command::Parked { command } => return tributary::parked::run(&command).await,
        Command::Conflicts { command } => return tributary::conflicts::run(&command).await,
        Command::Status {
            config,
            parked,
            json,
        } => {
            let config = Config::load(&config)?;
            let status = tributary::status_command::gather(&config, parked).await?;
            if json {
                print!("{}", tributary::status_command::render_json(&status)?);
            } else {
                print!("{}", tributary::status_command::render_text(&status));
            }
        }
        Command::Verify {
            config: path,
            site,
            tables,
            list,
            limit,
            out,
            extra,
            page_rows,
        } => {
            let config = Config::load(&path)?;
            let configured = config.site_id().in_file(&config)?;
            if let Some(site) = &site
                && *site != configured
            {
                anyhow::bail!(
                    "--site {site} does not match the configuration's [site] id '{configured}' \
                     in {}; verify reads the site database that file names, so give the \
                     configuration of site {site} (with its [site] and HQ's [hq] sections)",
                    path.display()
                );
            }
            let (site_opts, site_db) = config.site_database().in_file(&config)?;
            let (hq, hq_db) = config.hq_database().in_file(&config)?;
            let tables = if tables.is_empty() && site.is_none() {
                verify::CLINICAL_TABLES
                    .iter()
                    .map(|t| (*t).to_owned())
                    .collect()
            } else {
                tables
            };
            let options = verify::VerifyOptions {
                tables,
                extra,
                page_rows,
            };
            let mut findings = verify::Findings::new(
                if list { limit } else { 0 },
                out.as_deref(),
                &format!("tributary verify --site {configured}: rows that disagree with HQ"),
            )?;
            let reports = verify::verify_tables(
                &site_opts,
                &site_db,
                &hq,
                &hq_db,
                &config.policy().in_file(&config)?,
                &options,
                &mut findings,
            )
            .await?;
            let written = findings.finish()?;
            print!("{}", report::verification_table(&reports));
            if list {
                print!("{}", report::findings_list(&findings));
            }
            if let Some(path) = written {
                println!(
                    "every missing, extra and different row is listed in {}; at the site, \
                     'tributary resend --from-file {}' sends them again",
                    path.display(),
                    path.display()
                );
            }
            if !reports.iter().all(|r| r.ok()) {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Resend {
            config,
            table,
            identity,
            from_file,
        } => {
            let settings = Config::load(&config)?.capture_settings()?;
            let mut requests: std::collections::BTreeMap<String, Vec<tributary_model::Identity>> =
                std::collections::BTreeMap::new();
            if let Some(path) = &from_file {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let (wanted, extra) = verify::read_findings(&text)
                    .with_context(|| format!("reading {}", path.display()))?;
                if extra > 0 {
                    eprintln!("{extra} rows listed as extra at HQ are not at the site: skipped");
                }
                for (table, identities) in wanted {
                    requests.entry(table).or_default().extend(identities);
                }
            }
            if let Some(table) = table {
                requests.entry(table).or_default().extend(
                    identity
                        .iter()
                        .map(|i| tributary_model::Identity::from_raw(resend_identity(i))),
                );
            }
            let report = tributary_capture::run_resend(&settings, &requests).await?;
            print!("{}", report::resend_table(&report));
        }
        Command::Schema {
            command: SchemaCommand::Show { config, hq },
        } => {
            let config = Config::load(&config)?;
            let (opts, database) = if hq {
                config.hq_database().in_file(&config)?
            } else {
                config.site_database().in_file(&config)?
            };
            let policy = config.policy().in_file(&config)?;
            let mut conn = mysql_async::Conn::new(opts)
                .await
                .context("connecting to the database")?;
            let catalog = tributary_schema::Catalog::introspect(&mut conn, &database).await?;
            let map = tributary_schema::SchemaMap::build(&catalog, &policy)?;
            let settings: Vec<String> = if catalog.tables.contains_key(GLOBAL_PROPERTY) {
                mysql_async::prelude::Queryable::query(
                    &mut conn,
                    "SELECT property FROM global_property ORDER BY property",
                )
                .await
                .context("reading the names of global_property")?
            } else {
                Vec::new()
            };
            print!(
                "{}",
                tributary::schema_report::render(&catalog, &map, &policy, &settings)
            );
        }
        Command::Demo {
            site_env,
            hq_env,
            work_dir,
            patients,
            live_patients,
        } => {
            let options = DemoOptions {
                work_dir,
                site_env,
                hq_env,
                patients,
                live_patients,
            };
            if !run_demo(&options).await? {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An identity typed on the command line: a natural key (JSON array) as given, a uuid
/// lower-cased as identities are.
fn resend_identity(text: &str) -> String {
    let text = text.trim();
    if text.starts_with('[') {
        text.to_owned()
    } else {
        text.to_ascii_lowercase()
    }
}

/// `tributary ship`: the spool (capture's directory) to Kafka until a signal.
async fn ship(config: &Config) -> Result<()> {
    let kafka = config.kafka_settings().in_file(config)?;
    let shipper = config.shipper_settings().in_file(config)?;
    let spool = config.open_spool().in_file(config)?;
    let progress = std::sync::Arc::new(ShipperProgress::default());
    tracing::info!(topic = %kafka.topic, brokers = %kafka.brokers, "shipping batches to kafka");
    let shutdown = CancellationToken::new();
    until_signal(
        &shutdown,
        tributary_kafka::run_shipper(&spool, &kafka, &shipper, progress.clone(), shutdown.clone()),
    )
    .await?;
    let ordering = std::sync::atomic::Ordering::Relaxed;
    println!(
        "shipped {} batches ({} bytes)",
        progress.batches.load(ordering),
        progress.bytes.load(ordering)
    );
    Ok(())
}

/// `tributary apply` with the Kafka transport: the consumer group feeds the applier.
async fn apply_from_kafka(
    config: &Config,
    settings: tributary_apply::ApplySettings,
    once: bool,
) -> Result<()> {
    let kafka = config.kafka_settings().in_file(config)?;
    let consumer = config.consumer_settings().in_file(config)?;
    let mut applier = KafkaApplier::new(settings, &kafka.topic);
    let shutdown = CancellationToken::new();
    let mode = if once {
        RunMode::Drain
    } else {
        RunMode::Follow
    };
    let report = until_signal(
        &shutdown,
        tributary_kafka::run_consumer(&kafka, &consumer, &mut applier, mode, shutdown.clone()),
    )
    .await?;
    if once {
        let released = applier.retry_parked().await?;
        let pass = &applier.report;
        println!(
            "applied {} batches ({} rows, {} parked, {} released), {} duplicates skipped, {} rejected",
            pass.batches_applied,
            pass.rows.applied,
            pass.rows.parked,
            pass.rows.released + released,
            pass.duplicates,
            pass.rejected
        );
        for (site, seq) in applier.gaps() {
            println!("site {site} is held: waiting for batch {seq}");
        }
        for (partition, offset) in &report.held {
            println!("partition {partition} is held at offset {offset}");
        }
    }
    Ok(())
}

/// Starts the `/metrics` endpoint when `--metrics-listen` or `[metrics] listen` asks for it.
async fn serve_metrics(config: &Config, args: &MetricsArgs) -> Result<Option<MetricsEndpoint>> {
    MetricsEndpoint::start_if(config.metrics_listen(args.metrics_listen).in_file(config)?).await
}

async fn stop_metrics(endpoint: Option<MetricsEndpoint>) {
    if let Some(endpoint) = endpoint {
        endpoint.stop().await;
    }
}

/// Runs `work` to its end; SIGINT or SIGTERM cancel `shutdown` first, so the work drains
/// (capture flushes what is pending) and stops.
async fn until_signal<T, E>(
    shutdown: &CancellationToken,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::pin!(work);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        result = &mut work => return result,
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    work.await
}
