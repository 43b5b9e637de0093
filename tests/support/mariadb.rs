//! Private MariaDB instances, started by `deploy/mariadb.sh`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, anyhow, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::paths::{repo_root, services_root};
use crate::process::{pid_alive, without_inherited_fds};

/// Which side of the replication an instance plays; see `deploy/mariadb.sh --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A clinic database: binlog on (ROW, FULL image, FULL metadata, CRC32), reset
    /// after the fixture load, so it holds only what the test does.
    Site,
    /// The central database (also has a binlog; harmless).
    Hq,
}

impl Role {
    /// `"site"` or `"hq"`, as `deploy/mariadb.sh --role` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Site => "site",
            Role::Hq => "hq",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A private MariaDB server on 127.0.0.1 with database `openmrs` holding the OpenMRS 2.8
/// core schema and data (117 tables, 540 rows), and user `tributary` with a random
/// password. It lives in `<target>/tributary-services/<name>-<pid>-<n>/`.
///
/// Dropping it stops the server and removes the directory; when the drop happens
/// while a test panics, or when `TRIBUTARY_KEEP_SERVICES` is set, the directory (data,
/// `error.log`, logs of processes started there) is kept for inspection and its path
/// printed (`deploy/test.sh` removes such leftovers on its next run).
pub struct MariaDb {
    dir: PathBuf,
    role: Role,
    env: BTreeMap<String, String>,
    password: String,
    port: u16,
    pid: u32,
    server_id: u32,
    running: bool,
}

impl fmt::Debug for MariaDb {
    // By hand, so that the password never shows up in a debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MariaDb")
            .field("role", &self.role)
            .field("port", &self.port)
            .field("server_id", &self.server_id)
            .field("pid", &self.pid)
            .field("running", &self.running)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl MariaDb {
    /// Starts a fresh instance (see `deploy/mariadb.sh start`). `name` (letters,
    /// digits, `-`, `_`) names its directory. Blocks for about 0.2 s (about 1 s the
    /// first time, when the template datadir is built).
    pub fn start(role: Role, name: &str) -> anyhow::Result<MariaDb> {
        MariaDb::start_with_args(role, name, &[])
    }

    /// Like [`MariaDb::start`], with extra mariadbd options that override the defaults,
    /// e.g. `&["--binlog-row-image=MINIMAL"]` to test that the replicator refuses a site
    /// it cannot read. They are kept for [`MariaDb::start_server`].
    pub fn start_with_args(role: Role, name: &str, args: &[&str]) -> anyhow::Result<MariaDb> {
        MariaDb::start_instance(role, name, None, args)
    }

    /// Like [`MariaDb::start`], loaded with another OpenMRS core version's schema and data
    /// (`deploy/fixtures/openmrs-<version>`: 2.6, 2.7, 3.0; 2.8 is the default).
    pub fn start_openmrs(role: Role, name: &str, version: &str) -> anyhow::Result<MariaDb> {
        MariaDb::start_instance(role, name, Some(version), &[])
    }

    fn start_instance(
        role: Role,
        name: &str,
        openmrs: Option<&str>,
        args: &[&str],
    ) -> anyhow::Result<MariaDb> {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "instance name {name:?}: use letters, digits, '-' and '_'"
        );
        let root = services_root();
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let dir = loop {
            let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
            let dir = root.join(format!("{name}-{}-{n}", std::process::id()));
            if !dir.exists() {
                break dir;
            }
        };
        let mut cmd = script();
        cmd.arg("start").arg(&dir).arg("--role").arg(role.as_str());
        if let Some(version) = openmrs {
            cmd.arg("--openmrs").arg(version);
        }
        if !args.is_empty() {
            cmd.arg("--").args(args);
        }
        if let Err(e) = run(&mut cmd) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e.context(format!("starting the {role} MariaDB instance {name}")));
        }
        let mut db = MariaDb {
            dir,
            role,
            env: BTreeMap::new(),
            password: String::new(),
            port: 0,
            pid: 0,
            server_id: 0,
            running: true,
        };
        db.load_env()?;
        Ok(db)
    }

    /// Starts a site and an HQ instance in parallel (`<name>-site`, `<name>-hq`).
    pub fn start_site_and_hq(name: &str) -> anyhow::Result<(MariaDb, MariaDb)> {
        let site_name = format!("{name}-site");
        let hq_name = format!("{name}-hq");
        std::thread::scope(|s| {
            let site = s.spawn(|| MariaDb::start(Role::Site, &site_name));
            let hq = MariaDb::start(Role::Hq, &hq_name);
            let site = site
                .join()
                .map_err(|_| anyhow!("the thread starting the site instance panicked"))?;
            Ok((site?, hq?))
        })
    }

    fn load_env(&mut self) -> anyhow::Result<()> {
        let path = self.dir.join("env");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        self.env = parse_env(&text).with_context(|| format!("parsing {}", path.display()))?;
        self.port = self.var("PORT")?.parse().context("PORT")?;
        self.pid = self.var("PID")?.parse().context("PID")?;
        self.server_id = self.var("SERVER_ID")?.parse().context("SERVER_ID")?;
        let pw = self.password_file();
        self.password = fs::read_to_string(&pw)
            .with_context(|| format!("reading {}", pw.display()))?
            .trim_end()
            .to_owned();
        Ok(())
    }

    fn var(&self, key: &str) -> anyhow::Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{key} missing from {}/env", self.dir.display()))
    }

    /// A value from the instance's `env` file (see `deploy/mariadb.sh --help` for keys).
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// The role it was started with.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Its `server_id` (distinct among running instances).
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// The mariadbd process id (changes on [`MariaDb::start_server`]).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The instance directory (`env`, `password`, `error.log`, `data/`, `binlog/`); a
    /// good place for the logs of the processes a test starts next to it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The unix socket (root access through `deploy/mariadb.sh sql DIR`).
    pub fn socket(&self) -> PathBuf {
        PathBuf::from(self.env("SOCKET").unwrap_or_default())
    }

    /// `openmrs`.
    pub fn database(&self) -> &str {
        self.env("DATABASE").unwrap_or("openmrs")
    }

    /// `tributary`.
    pub fn user(&self) -> &str {
        self.env("USER").unwrap_or("tributary")
    }

    /// The file holding user `tributary`'s password (mode 0600, no trailing newline):
    /// what a replicator config should point at.
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("password")
    }

    /// User `tributary`'s password. Secret: do not log it.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A MariaDB client program (`mariadb`, `mariadb-dump`, ...) that connects to this server
    /// over TCP as the application user, the password in its environment.
    pub fn client_command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command.env("MYSQL_PWD", self.password()).args([
            "-h",
            "127.0.0.1",
            "-P",
            &self.port().to_string(),
            "-u",
            self.user(),
        ]);
        command
    }

    /// `mysql://tributary:<password>@127.0.0.1:<port>/openmrs`.
    ///
    /// It contains the password: never log or print it (and do not put it in an
    /// assertion message).
    pub fn url(&self) -> String {
        format!(
            "mysql://{}:{}@{}:{}/{}",
            self.user(),
            self.password,
            self.host(),
            self.port,
            self.database()
        )
    }

    /// Connection options for user `tributary` over TCP (not the socket), database `openmrs`.
    pub fn opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host())
            .tcp_port(self.port)
            .user(Some(self.user()))
            .pass(Some(self.password.as_str()))
            .db_name(Some(self.database()))
            .prefer_socket(false)
            .into()
    }

    /// Statements the server has run so far (`Questions`): every round trip costs one.
    pub async fn statements_run(&self) -> anyhow::Result<u64> {
        let row: Option<(String, u64)> = self
            .conn()
            .await?
            .query_first("SHOW GLOBAL STATUS LIKE 'Questions'")
            .await?;
        Ok(row.map_or(0, |(_, n)| n))
    }

    /// A new connection as user `tributary` (see [`MariaDb::opts`]).
    pub async fn conn(&self) -> anyhow::Result<Conn> {
        Conn::new(self.opts()).await.with_context(|| {
            format!(
                "connecting to the {} instance on port {}",
                self.role, self.port
            )
        })
    }

    /// Runs `sql` (one or more statements) on a new connection.
    /// Rotates and purges binary logs until only the newest is left (MariaDB keeps a binlog
    /// until InnoDB has checkpointed past it, so this may take a few rounds).
    pub async fn purge_all_but_newest_binlog(&self) -> anyhow::Result<()> {
        crate::wait_until(
            "the server to purge its older binlogs",
            std::time::Duration::from_secs(60),
            || async move {
                self.exec("FLUSH BINARY LOGS").await?;
                let mut conn = self.conn().await?;
                let files: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await?;
                let newest = files.last().map(|(f, _)| f.clone()).unwrap_or_default();
                conn.query_drop(format!("PURGE BINARY LOGS TO '{newest}'"))
                    .await?;
                let left: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await?;
                Ok(left.len() == 1)
            },
        )
        .await
    }

    pub async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let mut conn = self.conn().await?;
        conn.query_drop(sql)
            .await
            .with_context(|| format!("on the {} instance: {sql}", self.role))?;
        conn.disconnect().await?;
        Ok(())
    }

    /// The first column of the first row of `sql`, on a new connection.
    pub async fn scalar<T: FromValue + Send + 'static>(&self, sql: &str) -> anyhow::Result<T> {
        let mut conn = self.conn().await?;
        let value: Option<T> = conn
            .query_first(sql)
            .await
            .with_context(|| format!("on the {} instance: {sql}", self.role))?;
        conn.disconnect().await?;
        value.ok_or_else(|| anyhow!("no row from: {sql}"))
    }

    /// The last `lines` lines of the server's error log, for assertion messages.
    pub fn error_log(&self, lines: usize) -> String {
        let path = self.dir.join("error.log");
        let text = fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// True while the server process is alive.
    pub fn is_running(&self) -> bool {
        self.running && pid_alive(self.pid)
    }

    /// Graceful shutdown; the data stays, [`MariaDb::start_server`] brings it back.
    pub fn stop_server(&mut self) -> anyhow::Result<()> {
        // A frozen server would sit out the graceful deadline.
        self.thaw_server()?;
        run(script().arg("stop").arg(&self.dir))
            .with_context(|| format!("stopping the {} instance", self.role))?;
        self.running = false;
        Ok(())
    }

    /// Freezes the server (SIGSTOP): its connections stay open and say nothing, as over a
    /// link that died without closing. [`MariaDb::thaw_server`] (or stopping it) resumes it.
    pub fn freeze_server(&self) -> anyhow::Result<()> {
        self.signal_server("-STOP")
    }

    /// Resumes a frozen server (SIGCONT; nothing happens to a running one).
    pub fn thaw_server(&self) -> anyhow::Result<()> {
        self.signal_server("-CONT")
    }

    fn signal_server(&self, signal: &str) -> anyhow::Result<()> {
        if pid_alive(self.pid) {
            let status = Command::new("kill")
                .arg(signal)
                .arg(self.pid.to_string())
                .status()
                .context("running kill(1)")?;
            anyhow::ensure!(
                status.success() || !pid_alive(self.pid),
                "kill {signal} {} failed",
                self.pid
            );
        }
        Ok(())
    }

    /// Crashes the server (SIGKILL) and waits until it is gone; the data stays (InnoDB
    /// recovers it on [`MariaDb::start_server`]).
    pub fn kill9_server(&mut self) -> anyhow::Result<()> {
        self.signal_server("-KILL")?;
        // `stop` waits until the process is gone and removes its stale socket.
        self.stop_server()
    }

    /// Starts the stopped server again on the same data, port, password, server id and
    /// extra options.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        run(script().arg("start").arg(&self.dir))
            .with_context(|| format!("restarting the {} instance", self.role))?;
        self.running = true;
        self.load_env()
    }

    /// [`MariaDb::stop_server`] then [`MariaDb::start_server`].
    pub fn restart_server(&mut self) -> anyhow::Result<()> {
        self.stop_server()?;
        self.start_server()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let stopped = run(script().arg("stop").arg(&self.dir));
        if let Err(e) = &stopped {
            eprintln!("tributary-suite: stopping {}: {e:#}", self.dir.display());
            if pid_alive(self.pid) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(self.pid.to_string())
                    .status();
            }
        }
        if std::thread::panicking() || std::env::var_os("TRIBUTARY_KEEP_SERVICES").is_some() {
            eprintln!(
                "tributary-suite: keeping the {} instance directory {} (error.log, data) for inspection",
                self.role,
                self.dir.display()
            );
        } else if stopped.is_ok() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `deploy/mariadb.sh`, with the template cache under this target directory.
fn script() -> Command {
    let mut cmd = Command::new(repo_root().join("deploy").join("mariadb.sh"));
    if std::env::var_os("TRIBUTARY_SERVICES_CACHE").is_none() {
        cmd.env(
            "TRIBUTARY_SERVICES_CACHE",
            services_root().join("templates"),
        );
    }
    without_inherited_fds(&mut cmd).stdin(Stdio::null());
    cmd
}

/// Runs `cmd`; on failure, an error with its exit status, stdout and stderr (which
/// holds the tail of the server's error log).
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let args: Vec<&OsStr> = cmd.get_args().collect();
        bail!(
            "{} {:?} failed ({}):\n{}{}",
            cmd.get_program().to_string_lossy(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Parses the `KEY=VALUE` lines that `deploy/mariadb.sh` writes: values are bare or
/// single-quoted shell words (`'it'\''s'`).
fn parse_env(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, raw) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("not KEY=VALUE: {line:?}"))?;
        let mut value = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => bail!("unterminated quote in {line:?}"),
                    }
                },
                '\\' => value.push(
                    chars
                        .next()
                        .ok_or_else(|| anyhow!("dangling \\ in {line:?}"))?,
                ),
                c => value.push(c),
            }
        }
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

impl MariaDb {
    /// Capture settings for this site database as the benchmarks run capture in-process:
    /// every tuning at its default, OpenMRS core's policy, batch files in `outbox_dir`.
    pub fn capture_settings(
        &self,
        site_id: &str,
        replica_server_id: u32,
        state_dir: PathBuf,
        outbox_dir: PathBuf,
        key_file: PathBuf,
        start: tributary_capture::StartPosition,
    ) -> tributary_capture::CaptureSettings {
        use tributary_capture as capture;
        capture::CaptureSettings {
            site_id: site_id.into(),
            source: self.opts(),
            database: self.database().to_owned(),
            replica_server_id,
            state_dir,
            outbox_dir,
            key_file,
            policy: tributary_schema::Policy::openmrs_core(),
            max_batch_rows: capture::DEFAULT_MAX_BATCH_ROWS,
            transaction_part_rows: capture::DEFAULT_TRANSACTION_PART_ROWS,
            flush_interval: capture::DEFAULT_FLUSH_INTERVAL,
            keepalive_interval: capture::DEFAULT_KEEPALIVE_INTERVAL,
            health_interval: capture::DEFAULT_HEALTH_INTERVAL,
            identity_cache_entries: capture::DEFAULT_IDENTITY_CACHE_ENTRIES,
            snapshot_chunk_rows: capture::DEFAULT_SNAPSHOT_CHUNK_ROWS,
            start,
            resume_by: capture::ResumeBy::Gtid,
            spool: capture::SpoolLimits::default(),
            spool_format: tributary_transport::SpoolFormat::Files,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_env;

    #[test]
    fn parses_bare_and_quoted_values() {
        let env = parse_env("A=1\nB='a b'\nC='it'\\''s'\nD=''\n").unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "a b");
        assert_eq!(env["C"], "it's");
        assert_eq!(env["D"], "");
    }
}
