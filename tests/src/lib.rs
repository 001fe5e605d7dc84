//! # nightowl end-to-end harness
//!
//! Starts the real `nightowl-collector` and `nightowl-agent` binaries (one shared
//! release build), with real certificates made by `ca init` / `ca issue`, real config
//! files and real mounts. Tests wait generously for what they expect and never assert
//! tight wall-clock bounds.
//!
//! Binaries: `NIGHTOWL_BIN_DIR` if set (CI builds them once, before `cargo test`);
//! otherwise the harness runs `cargo build --release -p nightowl-agent -p
//! nightowl-collector` once per test process (a no-op when up to date).
//!
//! [`loadgen`] is the logic of `nightowl-loadgen` (`src/bin/`): many simulated agents in
//! one process, for the throughput benchmark and the drills (`deploy/bench`,
//! `deploy/drills`).

#![forbid(unsafe_code)]

pub mod drill;
pub mod loadgen;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Directory holding the release binaries.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("NIGHTOWL_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "-p", "nightowl-agent", "-p", "nightowl-collector"])
            .status()
            .expect("run cargo build for the e2e binaries");
        assert!(status.success(), "building the release binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        target.join("release")
    })
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

pub fn collector_bin() -> PathBuf {
    bin_dir().join("nightowl-collector")
}

pub fn agent_bin() -> PathBuf {
    bin_dir().join("nightowl-agent")
}

/// Runs a command to completion, returning its output (never panics on non-zero).
pub fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap_or_else(|error| panic!("run {command:?}: {error}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Polls `probe` until it returns Some, or panics after `timeout` saying `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PKI made by the real `ca init` / `ca issue` commands.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn init(dir: &Path) -> Pki {
        Self::init_with_names(dir, &[])
    }

    /// A PKI whose collector certificate is valid for `names` (default: localhost and
    /// 127.0.0.1).
    pub fn init_with_names(dir: &Path, names: &[&str]) -> Pki {
        let mut command = Command::new(collector_bin());
        command.args(["ca", "init", "--dir"]).arg(dir);
        for name in names {
            command.args(["--name", name]);
        }
        run_ok(&mut command);
        Pki { dir: dir.to_path_buf() }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues an agent certificate; returns (cert, key).
    pub fn issue(&self, tenant: &str, agent: &str) -> (PathBuf, PathBuf) {
        let cert = self.dir.join(format!("{tenant}-{agent}.pem"));
        let key = self.dir.join(format!("{tenant}-{agent}.key"));
        run_ok(
            Command::new(collector_bin())
                .args(["ca", "issue", "--dir"])
                .arg(&self.dir)
                .args(["--tenant", tenant, "--agent", agent, "--cert-out"])
                .arg(&cert)
                .arg("--key-out")
                .arg(&key),
        );
        (cert, key)
    }
}

/// A daemon process whose stderr goes to a log file; killed on drop.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, command: &mut Command, log: PathBuf) -> Daemon {
        let file = fs::OpenOptions::new().create(true).append(true).open(&log).expect("open daemon log");
        let child = command
            .env("RUST_LOG", std::env::var("NIGHTOWL_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {name}: {error}"));
        Daemon { name: name.into(), child: Some(child), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within 30s of SIGTERM; log:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- {} log ({}) -----\n{}", self.name, self.log.display(), self.log_text());
        }
    }
}

/// A collector with its own config, data dir and port. The config says port 0: the
/// collector picks a free port at its first start and says which (`listen.addr` in its
/// data dir); the harness then writes that port into the config, so restarts keep it and
/// agents reconnect to the same address.
pub struct Collector {
    pub config: PathBuf,
    addr: Option<SocketAddr>,
    ip: std::net::IpAddr,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Collector {
    /// Writes a config for `pki` into `dir` (port chosen at the first start, kept across
    /// restarts).
    pub fn new(dir: &Path, pki: &Pki) -> Collector {
        Self::listening_on(dir, pki, "127.0.0.1".parse().unwrap())
    }

    /// Like [`Collector::new`], listening on `ip` (e.g. a test veth address).
    pub fn listening_on(dir: &Path, pki: &Pki, ip: std::net::IpAddr) -> Collector {
        Self::configured(dir, pki, ip, "", "")
    }

    /// Like [`Collector::new`] with extra config: `top` (top-level keys such as
    /// `rules = "..."`) goes before the first table, `tables` (e.g. `[[maintenance]]`,
    /// `[coverage.default]`) after the last one.
    pub fn with_config(dir: &Path, pki: &Pki, top: &str, tables: &str) -> Collector {
        Self::configured(dir, pki, "127.0.0.1".parse().unwrap(), top, tables)
    }

    fn configured(dir: &Path, pki: &Pki, ip: std::net::IpAddr, top: &str, tables: &str) -> Collector {
        let addr = SocketAddr::new(ip, 0);
        let config = dir.join("collector.toml");
        fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\ndata_dir = \"{data}\"\n{top}\n[tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n{tables}\n",
                data = dir.join("data").display(),
                ca = pki.ca().display(),
                cert = pki.dir.join("collector.pem").display(),
                key = pki.dir.join("collector.key").display(),
            ),
        )
        .unwrap();
        Collector { config, addr: None, ip, dir: dir.to_path_buf(), daemon: None }
    }

    /// The address the collector listens on. Known from its first start on.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the collector's address is known once it has started: call start() first")
    }

    /// Starts the collector and waits until it accepts TCP connections.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "collector already running");
        let mut daemon = Daemon::spawn(
            "collector",
            Command::new(collector_bin()).arg("run").arg("--config").arg(&self.config),
            self.dir.join("collector.log"),
        );
        let addr = match self.addr {
            Some(addr) => addr,
            None => {
                // First start: port 0. The collector removes a stale address file before
                // it binds, and this data dir is new, so the file is this run's.
                let file = self.dir.join("data").join("listen.addr");
                let addr: SocketAddr =
                    wait_for("the collector's listen.addr", Duration::from_secs(30), || {
                        assert!(
                            daemon.is_running(),
                            "collector exited at start; log:\n{}",
                            daemon.log_text()
                        );
                        fs::read_to_string(&file)
                            .ok()
                            .filter(|text| text.ends_with('\n'))?
                            .trim()
                            .parse()
                            .ok()
                    });
                assert_eq!(addr.ip(), self.ip, "the collector listens where it was told");
                let text = fs::read_to_string(&self.config).unwrap();
                let pinned = text.replacen(
                    &format!("listen = \"{}\"", SocketAddr::new(self.ip, 0)),
                    &format!("listen = \"{addr}\""),
                    1,
                );
                assert_ne!(text, pinned, "the harness config has a port-0 listen line");
                fs::write(&self.config, pinned).unwrap();
                self.addr = Some(addr);
                addr
            }
        };
        wait_for("the collector to listen", Duration::from_secs(30), || {
            assert!(daemon.is_running(), "collector exited at start; log:\n{}", daemon.log_text());
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok().map(|_| ())
        });
        self.daemon = Some(daemon);
    }

    pub fn kill9(&mut self) {
        self.daemon.as_mut().expect("collector running").kill9();
        self.daemon = None;
    }

    pub fn terminate(&mut self) -> Option<i32> {
        let code = self.daemon.as_mut().expect("collector running").terminate();
        self.daemon = None;
        code
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }

    /// The running collector's process id (None when stopped).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// Whether the collector process is still running (false once it exited or was stopped).
    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::is_running)
    }

    /// Every queued event, via `alerts tail` (works while the collector runs).
    pub fn events(&self) -> Vec<Value> {
        let output =
            run(Command::new(collector_bin()).args(["alerts", "tail", "--config"]).arg(&self.config));
        if !output.status.success() {
            // No store yet (collector never committed): no events.
            return Vec::new();
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("alerts tail printed non-JSON {line:?}: {error}"))
            })
            .collect()
    }

    /// `agents list --json`.
    pub fn agents(&self) -> Vec<Value> {
        let output = run(Command::new(collector_bin())
            .args(["agents", "list", "--json", "--config"])
            .arg(&self.config));
        if !output.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect()
    }

    /// The collector's view of one agent.
    pub fn agent(&self, tenant: &str, agent: &str) -> Option<Value> {
        self.agents().into_iter().find(|row| row["tenant"] == tenant && row["agent"] == agent)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr())
    }
}

/// An agent with its own config and state dir.
pub struct Agent {
    pub config: PathBuf,
    dir: PathBuf,
    /// The `[collector]` and `[agent]` part of the config, kept across rewrites.
    head: String,
    daemon: Option<Daemon>,
}

impl Agent {
    /// Writes a config: sampling every `interval`, watching exactly `disks`.
    pub fn new(
        dir: &Path,
        collector: &Collector,
        pki: &Pki,
        cert: &Path,
        key: &Path,
        interval: &str,
        disks: &[&Path],
    ) -> Agent {
        fs::create_dir_all(dir).unwrap();
        let head = format!(
            "[collector]\nurl = \"{url}\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [agent]\nstate_dir = \"{state}\"\ninterval = \"{interval}\"\nheartbeat = \"1s\"\n",
            url = collector.url(),
            ca = pki.ca().display(),
            cert = cert.display(),
            key = key.display(),
            state = dir.join("state").display(),
        );
        let agent = Agent { config: dir.join("agent.toml"), dir: dir.to_path_buf(), head, daemon: None };
        agent.rewrite_config(disks, "");
        agent
    }

    /// Rewrites the config file (same identity, spool and interval): watch exactly
    /// `disks`, plus `extra` TOML appended verbatim. The file is replaced by rename, as
    /// editors and config management do.
    pub fn rewrite_config(&self, disks: &[&Path], extra: &str) {
        let include: Vec<String> =
            disks.iter().map(|disk| format!("{:?}", disk.display().to_string())).collect();
        let text = format!("{}[disk]\ninclude = [{}]\n{extra}", self.head, include.join(", "));
        let temporary = self.dir.join(".agent.toml.tmp");
        fs::write(&temporary, text).unwrap();
        fs::rename(&temporary, &self.config).unwrap();
    }

    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "agent already running");
        self.daemon = Some(Daemon::spawn(
            "agent",
            Command::new(agent_bin()).arg("run").arg("--config").arg(&self.config),
            self.dir.join("agent.log"),
        ));
    }

    /// Starts the agent inside network namespace `netns` (`ip netns exec`).
    pub fn start_in(&mut self, netns: &str) {
        assert!(self.daemon.is_none(), "agent already running");
        self.daemon = Some(Daemon::spawn(
            "agent",
            Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(agent_bin())
                .arg("run")
                .arg("--config")
                .arg(&self.config),
            self.dir.join("agent.log"),
        ));
    }

    /// Sets `[agent] labels` (e.g. role = "server") and rewrites the config.
    pub fn set_labels(&mut self, labels: &[(&str, &str)], disks: &[&Path]) {
        let pairs: Vec<String> = labels.iter().map(|(key, value)| format!("{key} = {value:?}")).collect();
        self.head =
            self.head.replace("[agent]\n", &format!("[agent]\nlabels = {{ {} }}\n", pairs.join(", ")));
        self.rewrite_config(disks, "");
    }

    pub fn kill9(&mut self) {
        self.daemon.as_mut().expect("agent running").kill9();
        self.daemon = None;
    }

    pub fn terminate(&mut self) -> Option<i32> {
        let code = self.daemon.as_mut().expect("agent running").terminate();
        self.daemon = None;
        code
    }

    /// The running agent's process id (None when stopped).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::is_running)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// `nightowl-agent spool`: what is waiting for an ack.
    pub fn spool(&self) -> Value {
        let stdout = run_ok(Command::new(agent_bin()).args(["spool", "--config"]).arg(&self.config));
        serde_json::from_str(&stdout).expect("spool json")
    }
}

/// A network namespace joined to this one by a veth pair: a test host at `peer`,
/// reachable from here via `local`. Deleted (with its veth) on drop.
pub struct NetnsHost {
    pub name: String,
    /// The veth end in this (the test's) namespace.
    pub local_link: String,
    pub local: std::net::IpAddr,
    pub peer: std::net::IpAddr,
}

impl NetnsHost {
    /// Creates it; None (with a loud SKIP line) when namespaces cannot be made here.
    pub fn create(tag: &str) -> Option<NetnsHost> {
        let id = std::process::id() % 250;
        let name = format!("nightowl-{tag}-{}", std::process::id());
        let local_link = format!("no{tag}{id}a");
        let peer_link = format!("no{tag}{id}b");
        let subnet = 100 + (std::process::id() % 100);
        let local: std::net::IpAddr = format!("10.204.{subnet}.1").parse().unwrap();
        let peer: std::net::IpAddr = format!("10.204.{subnet}.2").parse().unwrap();
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                local_link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                peer_link.clone(),
            ],
            vec!["link".into(), "set".into(), peer_link.clone(), "netns".into(), name.clone()],
            vec!["addr".into(), "add".into(), format!("{local}/30"), "dev".into(), local_link.clone()],
            vec!["link".into(), "set".into(), local_link.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("{peer}/30"),
                "dev".into(),
                peer_link.clone(),
            ],
            vec!["-n".into(), name.clone(), "link".into(), "set".into(), peer_link.clone(), "up".into()],
            vec!["-n".into(), name.clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
        ];
        let host = NetnsHost { name, local_link, local, peer };
        // Safety net: when a test takes the link down, the /30 route goes with it and
        // traffic to the test host would follow the default route off this machine.
        // A low-priority blackhole for all test-host subnets keeps it here (it fails
        // at once, which is what "unreachable" looks like). Shared by every test; left
        // in place on purpose (harmless, and others may rely on it concurrently).
        let _ =
            run(Command::new("ip").args(["route", "add", "blackhole", "10.204.0.0/16", "metric", "4000"]));
        for step in steps {
            let output = run(Command::new("ip").args(&step));
            if !output.status.success() {
                eprintln!(
                    "SKIP: cannot build a network namespace test host (`ip {}`): {}",
                    step.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                return None;
            }
        }
        Some(host)
    }

    /// Takes the link down (from this side): the host becomes unreachable.
    pub fn link_down(&self) {
        run_ok(Command::new("ip").args(["link", "set", &self.local_link, "down"]));
    }

    pub fn link_up(&self) {
        run_ok(Command::new("ip").args(["link", "set", &self.local_link, "up"]));
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.local_link]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A tmpfs mounted for the test's lifetime (lazily unmounted on drop, even on panic).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` at `path`; None (with a loud SKIP line) when this
    /// machine does not let us mount.
    pub fn mount(path: &Path, size_mib: u32) -> Option<Tmpfs> {
        fs::create_dir_all(path).unwrap();
        let output = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path));
        if output.status.success() {
            Some(Tmpfs { path: path.to_path_buf() })
        } else {
            eprintln!(
                "SKIP: cannot mount a tmpfs at {} (need root / CAP_SYS_ADMIN): {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            None
        }
    }

    /// Writes `mib` MiB into `name` (synced, so statvfs sees it).
    pub fn fill(&self, name: &str, mib: usize) {
        use std::io::Write;
        let mut file = fs::File::create(self.path.join(name)).unwrap();
        let chunk = vec![0xa5u8; 1024 * 1024];
        for _ in 0..mib {
            // tmpfs may refuse the last bytes when full; that is fine for a filler.
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
    }

    pub fn remove(&self, name: &str) {
        fs::remove_file(self.path.join(name)).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// An instant as RFC 3339 UTC with whole seconds (`2026-11-28T22:00:05Z`).
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let at = jiff::Timestamp::try_from(at).expect("a time jiff can represent");
    jiff::Timestamp::from_second(at.as_second()).expect("whole seconds of a valid time").to_string()
}

/// Events of one fingerprint, in queue order, as (status, severity).
pub fn transitions(events: &[Value], fingerprint: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|event| event["fingerprint"] == fingerprint)
        .map(|event| {
            (event["status"].as_str().unwrap().to_owned(), event["severity"].as_str().unwrap().to_owned())
        })
        .collect()
}

// ----- alert feed (operator certificates, feed subscriptions) -----

impl Pki {
    /// Issues an operator certificate for the alert feed (every tenant when `tenant` is
    /// None); returns (cert, key).
    pub fn issue_operator(&self, name: &str, tenant: Option<&str>) -> (PathBuf, PathBuf) {
        let stem = format!("operator-{}-{name}", tenant.unwrap_or("all"));
        let cert = self.dir.join(format!("{stem}.pem"));
        let key = self.dir.join(format!("{stem}.key"));
        let mut command = Command::new(collector_bin());
        command.args(["ca", "issue-operator", "--dir"]).arg(&self.dir).args(["--name", name]);
        if let Some(tenant) = tenant {
            command.args(["--tenant", tenant]);
        }
        run_ok(command.arg("--cert-out").arg(&cert).arg("--key-out").arg(&key));
        (cert, key)
    }
}

/// A Nagios-style check whose exit status is read from `flag` (write "0" for OK, "2"
/// for CRITICAL): a real process the test flips to make real alerts fire and resolve.
pub fn flag_check(name: &str, flag: &Path) -> String {
    format!(
        "[[command]]\nname = \"{name}\"\ncommand = [\"/bin/sh\", \"-c\", \"read code < '{flag}'; echo \\\"flag $code\\\"; exit $code\"]\n",
        flag = flag.display()
    )
}

// ---------------------------------------------------------------------------------------
// Central policy (issue 4): helpers used by `e2e_policy`.
// ---------------------------------------------------------------------------------------

/// Replaces `path` with `text` the way editors and config management do (write a
/// temporary file beside it, rename over it), so a watcher sees one complete change.
pub fn replace_file(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp-replace");
    fs::write(&temporary, text).unwrap();
    fs::rename(&temporary, path).unwrap();
}

/// The events of one agent's check, in queue order, as (status, rule, summary).
pub fn check_events(events: &[Value], agent: &str, check: &str) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|event| event["agent"] == agent && event["check"] == check)
        .map(|event| {
            let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
            (text("status"), text("rule"), text("summary"))
        })
        .collect()
}

/// A FUSE mount whose daemon never answers: every access to a path under it blocks,
/// as on a network filesystem whose server went away (a hard NFS or sshfs mount). The
/// kernel's wait is killable, so a process blocked there can still exit. The holder
/// (a shell that keeps `/dev/fuse` open and never reads it) is ended on drop, which
/// aborts the connection and fails whatever was blocked.
pub struct HungMount {
    pub path: PathBuf,
    holder: Child,
}

impl HungMount {
    /// Mounts it over `path` (an existing directory: what was there is hidden, open files
    /// stay readable); None (with a loud SKIP line) when this machine has no FUSE.
    pub fn mount(path: &Path) -> Option<HungMount> {
        fs::create_dir_all(path).unwrap();
        // `mount -i`: no mount.fuse helper, the kernel's own fuse type; fd 3 is the
        // connection, held open by the shell that `exec`s into a long sleep.
        let script = "exec 3<>/dev/fuse && mount -i -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 \
                      nightowl-hung \"$1\" && echo mounted && exec sleep 100000";
        let mut holder = Command::new("sh")
            .args(["-c", script, "hung-mount"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut first = String::new();
        let stdout = holder.stdout.take().expect("piped");
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first);
        if first.trim() != "mounted" {
            let _ = holder.kill();
            let output = holder.wait_with_output().expect("reap sh");
            eprintln!(
                "SKIP: cannot mount a hung FUSE filesystem at {} (need root and /dev/fuse): {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Some(HungMount { path: path.to_path_buf(), holder })
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// True when a thread of process `pid` waits in the kernel's FUSE code (`wchan`).
pub fn blocked_in_fuse(pid: u32) -> bool {
    let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    threads.flatten().any(|thread| {
        fs::read_to_string(thread.path().join("wchan")).is_ok_and(|wchan| wchan.starts_with("fuse"))
    })
}
