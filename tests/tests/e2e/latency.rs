//! Latency checks over a real, impaired network path.
//!
//! This kernel may lack `sch_netem`, so the impairment is made in userspace
//! (`tests/netns/impair.py`): two network namespaces joined by two TUN devices and a
//! relay that delays and drops packets going from A to B. The far end
//! (`tests/netns/peers.py`, in B) serves TCP, HTTP, HTTPS and DNS; the kernel in B
//! answers ICMP. The real `nightowl-agent check` runs in A and its output is parsed.
//!
//! Needs root (namespaces, TUN). Without it every test prints a loud SKIP line.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nightowl_tests::{agent_bin, run, run_ok, workspace_root};

const TCP_PORT: u16 = 7000;
const CLOSED_PORT: u16 = 7001;
const HTTP_PORT: u16 = 8080;
const HTTPS_PORT: u16 = 8443;
const DNS_PORT: u16 = 53;
const DNS_NAME: &str = "printer.nightowl.test";

/// One `  <check_id> <status> key=value …  (message)` line of `check` output.
#[derive(Debug)]
struct CheckLine {
    status: String,
    metrics: HashMap<String, f64>,
    message: String,
}

impl CheckLine {
    fn metric(&self, name: &str) -> f64 {
        *self.metrics.get(name).unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }
}

fn parse_check(output: &str) -> HashMap<String, CheckLine> {
    let mut lines = HashMap::new();
    for line in output.lines().filter(|line| line.starts_with("  ")) {
        let (head, message) = match line.find("  (") {
            Some(at) => (&line[..at], line[at + 3..].strip_suffix(')').unwrap_or(&line[at + 3..])),
            None => (line, ""),
        };
        let mut words = head.split_whitespace();
        let (Some(id), Some(status)) = (words.next(), words.next()) else { continue };
        let metrics = words
            .filter_map(|word| word.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.parse().expect("numeric metric")))
            .collect();
        lines.insert(
            id.to_owned(),
            CheckLine { status: status.to_owned(), metrics, message: message.to_owned() },
        );
    }
    lines
}

/// A process of the rig; killed on drop (closing its stdin first ends it cleanly).
struct Helper {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Helper {
    /// Starts `command` and waits for its "ready" line; None when it exits with 77.
    fn start(name: &'static str, command: &mut Command) -> Option<Helper> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {name}: {error}"));
        let stdin = child.stdin.take();
        let mut ready = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut ready).expect("read the ready line");
        if ready.trim() != "ready" {
            let status = child.wait().expect("wait");
            if status.code() == Some(77) {
                return None;
            }
            panic!("{name} did not start: {status}");
        }
        Some(Helper { name, child, stdin })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop when its stdin closed; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two namespaces joined by the userspace relay, peers running in B. Everything is
/// torn down on drop, also when a test panics.
struct Rig {
    ns_a: String,
    ns_b: String,
    /// B's address, the target of every check.
    peer: String,
    dir: tempfile::TempDir,
    /// Whether an https server runs in B (needs the openssl command).
    https: bool,
    // Dropped before the namespaces go (fields drop in order).
    peers: Option<Helper>,
    relay: Option<Helper>,
}

impl Rig {
    /// `tag`: one letter unique per test; `subnet`: the third octet of 10.203.x.0/24.
    fn new(tag: char, subnet: u8, delay_ms: u32, loss: f64) -> Option<Rig> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let ns_a = format!("nightowl-a-{pid}-{tag}");
        let ns_b = format!("nightowl-b-{pid}-{tag}");
        let output = run(Command::new("ip").args(["netns", "add", &ns_a]));
        if !output.status.success() {
            eprintln!(
                "SKIP: cannot create a network namespace (need root / CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // The agent runs as nobody in some checks: it must read its config.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut rig = Rig {
            ns_a,
            ns_b,
            peer: format!("10.203.{subnet}.2"),
            dir,
            https: false,
            peers: None,
            relay: None,
        };
        run_ok(Command::new("ip").args(["netns", "add", &rig.ns_b]));
        let script = workspace_root().join("tests/netns/impair.py");
        let relay = Helper::start(
            "impair.py",
            Command::new("python3")
                .arg(&script)
                .args(["--ns-a", &rig.ns_a, "--ns-b", &rig.ns_b])
                .args(["--tun-a", &format!("no{pid}{tag}a"), "--tun-b", &format!("no{pid}{tag}b")])
                .args([
                    "--addr-a",
                    &format!("10.203.{subnet}.1/24"),
                    "--addr-b",
                    &format!("10.203.{subnet}.2/24"),
                ])
                .args(["--delay-ms", &delay_ms.to_string(), "--loss", &loss.to_string(), "--seed", "7"]),
        );
        match relay {
            Some(relay) => rig.relay = Some(relay),
            None => {
                eprintln!("SKIP: cannot create TUN devices here (see impair.py's message above)");
                return None;
            }
        }
        let tls = rig.make_certificate();
        rig.https = tls.is_some();
        let peers_script = workspace_root().join("tests/netns/peers.py");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &rig.ns_b, "python3"])
            .arg(&peers_script)
            .args(["--addr", &rig.peer])
            .args(["--tcp-port", &TCP_PORT.to_string(), "--http-port", &HTTP_PORT.to_string()])
            .args([
                "--dns-port",
                &DNS_PORT.to_string(),
                "--dns-name",
                DNS_NAME,
                "--dns-answer",
                "10.203.99.9",
            ]);
        if let Some((cert, key)) = &tls {
            command.args(["--https-port", &HTTPS_PORT.to_string(), "--cert"]).arg(cert).arg("--key").arg(key);
        }
        rig.peers = Some(Helper::start("peers.py", &mut command).expect("peers.py started"));
        Some(rig)
    }

    /// A CA and a 30-day server certificate for B's address, made with the openssl
    /// command; None (with a SKIP line for the https part) without it.
    fn make_certificate(&self) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.path();
        let ext = dir.join("server.ext");
        fs::write(
            &ext,
            format!(
                "subjectAltName=IP:{}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                 extendedKeyUsage=serverAuth\n",
                self.peer
            ),
        )
        .unwrap();
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=nightowl test ca",
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=nightowl test server",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "30",
                "-extfile",
                "server.ext",
            ],
        ];
        for step in steps {
            match Command::new("openssl").args(step).current_dir(dir).stdin(Stdio::null()).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => panic!("openssl {step:?}: {}", String::from_utf8_lossy(&output.stderr)),
                Err(error) => {
                    eprintln!("SKIP (https checks only): no openssl command to make a certificate: {error}");
                    return None;
                }
            }
        }
        Some((dir.join("server.pem"), dir.join("server.key")))
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Sets `net.ipv4.ping_group_range` in namespace A.
    fn ping_group_range(&self, range: &str) {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.ns_a, "sysctl", "-qw"])
                .arg(format!("net.ipv4.ping_group_range={range}")),
        );
    }

    /// Runs `nightowl-agent check` in namespace A with `checks` (TOML) as the config;
    /// as root, or as nobody with `as_nobody`.
    fn check(&self, file: &str, checks: &str, as_nobody: bool) -> HashMap<String, CheckLine> {
        let config = self.dir.path().join(file);
        let state = self.dir.path().join("state");
        fs::write(&config, format!("[agent]\nstate_dir = {:?}\n{checks}", state.display().to_string()))
            .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns_a]);
        if as_nobody {
            command.args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
        }
        command.arg(agent_bin()).arg("check").arg("--config").arg(&config);
        let started = Instant::now();
        let output = run_ok(&mut command);
        eprintln!(
            "--- check {file} ({:.1}s){}\n{output}",
            started.elapsed().as_secs_f64(),
            if as_nobody { " as nobody" } else { "" }
        );
        parse_check(&output)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.peers = None;
        self.relay = None;
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// Deletes namespaces left by an earlier run of this test that was killed (its pid is
/// gone), so they do not pile up.
fn remove_stale_namespaces() {
    let output = run(Command::new("ip").args(["netns", "list"]));
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("nightowl-a-").or_else(|| name.strip_prefix("nightowl-b-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else { continue };
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn entry(name: &str, method: &str, target: &str, extra: &str) -> String {
    format!("[[latency]]\nname = \"{name}\"\nmethod = \"{method}\"\ntarget = \"{target}\"\n{extra}\n")
}

fn get<'a>(lines: &'a HashMap<String, CheckLine>, name: &str) -> &'a CheckLine {
    lines.get(&format!("latency:{name}")).unwrap_or_else(|| panic!("no latency:{name} in {lines:?}"))
}

fn assert_ok_line(line: &CheckLine, what: &str) {
    assert_eq!(line.status, "ok", "{what}: {line:?}");
}

fn assert_within(value: f64, low: f64, high: f64, what: &str) {
    assert!((low..=high).contains(&value), "{what} = {value:.2}, expected {low}..={high}");
}

#[test]
fn latency_checks_on_a_clean_path() {
    let Some(rig) = Rig::new('c', 1, 0, 0.0) else { return };
    let peer = rig.peer.clone();
    let quick = "count = 5\nspacing = \"20ms\"\ntimeout = \"1s\"";
    let dns = |name: &str, target: &str, record: &str| {
        entry(name, "dns", target, &format!("server = \"{peer}:{DNS_PORT}\"\nrecord = \"{record}\"\n{quick}"))
    };
    let mut checks = [
        entry("icmp", "icmp", &peer, quick),
        entry("tcp", "tcp", &format!("{peer}:{TCP_PORT}"), quick),
        entry("tcp-closed", "tcp", &format!("{peer}:{CLOSED_PORT}"), quick),
        entry("http", "http", &format!("http://{peer}:{HTTP_PORT}/"), quick),
        entry("http-fail", "http", &format!("http://{peer}:{HTTP_PORT}/fail"), quick),
        entry("http-redirect", "http", &format!("http://{peer}:{HTTP_PORT}/redirect"), quick),
        dns("dns", DNS_NAME, "A"),
        dns("dns-aaaa", DNS_NAME, "AAAA"),
        dns("dns-nx", "nobody.nightowl.test", "A"),
    ]
    .concat();
    if rig.https {
        let url = format!("https://{peer}:{HTTPS_PORT}/");
        checks.push_str(&entry(
            "https",
            "http",
            &url,
            &format!("ca = {:?}\n{quick}", rig.ca().display().to_string()),
        ));
        checks.push_str(&entry("https-untrusted", "http", &url, quick));
    }
    // As root with ping sockets refused (the namespace default "1 0"): a raw socket.
    rig.ping_group_range("1 0");
    let lines = rig.check("clean.toml", &checks, false);

    for name in ["icmp", "tcp", "http", "http-fail", "http-redirect", "dns", "dns-aaaa", "dns-nx"] {
        let line = get(&lines, name);
        assert_ok_line(line, name);
        assert_eq!(line.metric("sent"), 5.0, "{name}: {line:?}");
        assert_eq!(line.metric("loss_pct"), 0.0, "{name}: {line:?}");
        assert_eq!(line.metric("received"), 5.0, "{name}: {line:?}");
        let avg = line.metric("rtt_avg_ms");
        assert!(avg < 60.0, "{name}: a clean path should be fast, rtt_avg_ms = {avg}");
        assert!(line.metric("rtt_min_ms") <= avg && avg <= line.metric("rtt_max_ms"), "{name}: {line:?}");
        assert!(line.metric("rtt_p95_ms") <= line.metric("rtt_max_ms"), "{name}: {line:?}");
        assert!(line.metrics.contains_key("jitter_ms"), "{name}: {line:?}");
    }
    assert_eq!(get(&lines, "http").metric("status_code"), 200.0);
    assert_eq!(get(&lines, "http-fail").metric("status_code"), 503.0);
    assert_eq!(get(&lines, "http-redirect").metric("status_code"), 302.0, "redirects are not followed");
    assert_eq!(get(&lines, "dns").metric("answers"), 1.0);
    assert_eq!(get(&lines, "dns-aaaa").metric("answers"), 0.0);
    let nx = get(&lines, "dns-nx");
    assert_eq!(nx.metric("answers"), 0.0);
    assert!(nx.message.contains("NXDomain"), "{nx:?}");

    let closed = get(&lines, "tcp-closed");
    assert_ok_line(closed, "tcp-closed");
    assert_eq!(closed.metric("loss_pct"), 100.0);
    assert!(closed.message.to_lowercase().contains("refused"), "{closed:?}");

    if rig.https {
        let https = get(&lines, "https");
        assert_ok_line(https, "https");
        assert_eq!(https.metric("status_code"), 200.0);
        assert_eq!(https.metric("loss_pct"), 0.0);
        assert_within(https.metric("tls_expiry_days"), 29.0, 30.5, "https tls_expiry_days");
        // Not trusted without `ca`: every probe is lost, the expiry is still known.
        let untrusted = get(&lines, "https-untrusted");
        assert_ok_line(untrusted, "https-untrusted");
        assert_eq!(untrusted.metric("loss_pct"), 100.0);
        assert!(untrusted.message.contains("tls: invalid peer certificate"), "{untrusted:?}");
        assert_within(untrusted.metric("tls_expiry_days"), 29.0, 30.5, "untrusted tls_expiry_days");
    }

    // Unprivileged: a ping (dgram) socket where the group range allows it…
    let icmp_only = entry("icmp", "icmp", &peer, quick);
    rig.ping_group_range("0 2147483647");
    let lines = rig.check("nobody.toml", &icmp_only, true);
    let icmp = get(&lines, "icmp");
    assert_ok_line(icmp, "icmp as nobody with ping sockets");
    assert_eq!(icmp.metric("loss_pct"), 0.0, "{icmp:?}");
    // …and UNKNOWN, saying why, where it does not.
    rig.ping_group_range("1 0");
    let lines = rig.check("nobody.toml", &icmp_only, true);
    let icmp = get(&lines, "icmp");
    assert_eq!(icmp.status, "unknown", "{icmp:?}");
    assert!(icmp.message.contains("ping_group_range") && icmp.message.contains("CAP_NET_RAW"), "{icmp:?}");
}

#[test]
fn latency_checks_see_the_added_delay() {
    let Some(rig) = Rig::new('d', 2, 80, 0.0) else { return };
    let peer = rig.peer.clone();
    let series = "count = 10\nspacing = \"50ms\"\ntimeout = \"2s\"";
    let checks = [
        entry("icmp", "icmp", &peer, series),
        entry("tcp", "tcp", &format!("{peer}:{TCP_PORT}"), series),
        entry("http", "http", &format!("http://{peer}:{HTTP_PORT}/"), series),
        entry("dns", "dns", DNS_NAME, &format!("server = \"{peer}\"\n{series}")),
    ]
    .concat();
    rig.ping_group_range("0 2147483647");
    let lines = rig.check("delay.toml", &checks, false);
    for name in ["icmp", "tcp", "dns"] {
        let line = get(&lines, name);
        assert_ok_line(line, name);
        assert_eq!(line.metric("loss_pct"), 0.0, "{name}: {line:?}");
        // One delayed leg per round trip: 80 ms.
        assert_within(line.metric("rtt_avg_ms"), 60.0, 140.0, &format!("{name} rtt_avg_ms"));
        assert!(line.metric("rtt_min_ms") >= 75.0, "{name}: nothing can beat the delay: {line:?}");
    }
    // Connect (one delayed leg) + request (another): about 160 ms.
    let http = get(&lines, "http");
    assert_ok_line(http, "http");
    assert_eq!(http.metric("status_code"), 200.0);
    assert_eq!(http.metric("loss_pct"), 0.0, "{http:?}");
    assert_within(http.metric("rtt_avg_ms"), 140.0, 300.0, "http rtt_avg_ms");
}

#[test]
fn latency_checks_see_the_added_loss() {
    let Some(rig) = Rig::new('l', 3, 0, 0.3) else { return };
    let peer = rig.peer.clone();
    let series = "count = 100\nspacing = \"20ms\"\ntimeout = \"1s\"";
    let checks = [
        entry("icmp", "icmp", &peer, series),
        entry("dns", "dns", DNS_NAME, &format!("server = \"{peer}\"\n{series}")),
    ]
    .concat();
    let lines = rig.check("loss.toml", &checks, false);
    for name in ["icmp", "dns"] {
        let line = get(&lines, name);
        assert_ok_line(line, name);
        assert_eq!(line.metric("sent"), 100.0);
        // 30 % per probe over 100 probes: ±3 standard deviations is about 16..44.
        assert_within(line.metric("loss_pct"), 15.0, 45.0, &format!("{name} loss_pct"));
        assert_eq!(line.metric("received") + line.metric("loss_pct"), 100.0, "{name}: {line:?}");
        assert!(line.message.contains("probes lost: no answer within 1s"), "{name}: {line:?}");
    }
}
