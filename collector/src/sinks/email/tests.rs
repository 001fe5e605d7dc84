//! The email sink through the real runner and store, against a small SMTP server written
//! here (EHLO, STARTTLS or implicit TLS with a test CA, AUTH PLAIN, MAIL/RCPT/DATA with
//! dot-unstuffing, scripted RCPT replies) on 127.0.0.1.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::{self, AlertEvent, Severity, Status};
use crate::queue::{Reader, Store};
use crate::sinks::testing::{event, eventually, queue_events};
use crate::sinks::{HealthState, RawSink, SinkSpec, SinkStats, run_sink, validate_all};

/// One mail as the server received it.
#[derive(Debug, Clone)]
struct Mail {
    mail_from: String,
    rcpt_to: Vec<String>,
    /// The message after dot-unstuffing, CRLF line ends.
    data: String,
    tls: bool,
    /// Decoded AUTH PLAIN response (`\0user\0password`), if the client authenticated.
    auth: Option<String>,
}

#[derive(Clone)]
enum Security {
    Plain,
    StartTls(TlsAcceptor),
    Implicit(TlsAcceptor),
}

#[derive(Default)]
struct Recorded {
    mails: Mutex<Vec<Mail>>,
    /// Replies to the next RCPT commands (then "250 2.1.5 ok").
    rcpt_replies: Mutex<VecDeque<String>>,
    rcpt_commands: Mutex<u32>,
}

struct TestSmtp {
    port: u16,
    recorded: Arc<Recorded>,
}

impl TestSmtp {
    async fn start(security: Security) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let recorded = Arc::new(Recorded::default());
        let shared = recorded.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(session(tcp, security.clone(), shared.clone()));
            }
        });
        Self { port, recorded }
    }

    fn mails(&self) -> Vec<Mail> {
        self.recorded.mails.lock().unwrap().clone()
    }
}

async fn session(tcp: TcpStream, security: Security, recorded: Arc<Recorded>) {
    match security {
        Security::Plain => {
            converse(BufReader::new(tcp), false, false, &recorded).await;
        }
        Security::Implicit(acceptor) => {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            converse(BufReader::new(tls), false, true, &recorded).await;
        }
        Security::StartTls(acceptor) => {
            if let Some(tcp) = converse(BufReader::new(tcp), true, false, &recorded).await {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                converse_after_starttls(BufReader::new(tls), &recorded).await;
            }
        }
    }
}

async fn converse_after_starttls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: BufReader<S>,
    recorded: &Recorded,
) {
    Box::pin(talk(stream, false, true, false, recorded)).await;
}

/// Greets, then talks; returns the raw stream when the client asked for STARTTLS.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: BufReader<S>,
    offer_starttls: bool,
    tls: bool,
    recorded: &Recorded,
) -> Option<S> {
    Box::pin(talk(stream, offer_starttls, tls, true, recorded)).await
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    offer_starttls: bool,
    tls: bool,
    greet: bool,
    recorded: &Recorded,
) -> Option<S> {
    if greet {
        stream.write_all(b"220 127.0.0.1 nightowl test smtp\r\n").await.ok()?;
    }
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut auth = None;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => {
                let starttls = if offer_starttls { "250-STARTTLS\r\n" } else { "" };
                format!("250-127.0.0.1\r\n{starttls}250-AUTH PLAIN\r\n250 8BITMIME\r\n")
            }
            "HELO" => "250 127.0.0.1\r\n".into(),
            "STARTTLS" if offer_starttls => {
                stream.write_all(b"220 2.0.0 ready to start TLS\r\n").await.ok()?;
                return Some(stream.into_inner());
            }
            "AUTH" => {
                let mut parts = line.split(' ').skip(1);
                let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
                let initial = match parts.next() {
                    Some(initial) => initial.to_owned(),
                    None => {
                        stream.write_all(b"334 \r\n").await.ok()?;
                        let mut response = String::new();
                        stream.read_line(&mut response).await.ok()?;
                        response.trim_end().to_owned()
                    }
                };
                if mechanism == "PLAIN" {
                    auth = Some(String::from_utf8(base64_decode(&initial)).unwrap_or_default());
                    "235 2.7.0 authenticated\r\n".into()
                } else {
                    "504 5.5.4 unrecognized authentication type\r\n".into()
                }
            }
            "MAIL" => {
                mail_from = address(&line);
                rcpt_to.clear();
                "250 2.1.0 ok\r\n".into()
            }
            "RCPT" => {
                *recorded.rcpt_commands.lock().unwrap() += 1;
                let scripted = recorded.rcpt_replies.lock().unwrap().pop_front();
                match scripted {
                    Some(reply) => format!("{reply}\r\n"),
                    None => {
                        rcpt_to.push(address(&line));
                        "250 2.1.5 ok\r\n".into()
                    }
                }
            }
            "DATA" => {
                stream.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await.ok()?;
                let mut data = String::new();
                loop {
                    let mut data_line = String::new();
                    if stream.read_line(&mut data_line).await.ok()? == 0 {
                        return None;
                    }
                    if data_line == ".\r\n" {
                        break;
                    }
                    // Dot-unstuffing (RFC 5321 4.5.2).
                    data.push_str(data_line.strip_prefix('.').unwrap_or(&data_line));
                }
                recorded.mails.lock().unwrap().push(Mail {
                    mail_from: mail_from.clone(),
                    rcpt_to: rcpt_to.clone(),
                    data,
                    tls,
                    auth: auth.clone(),
                });
                "250 2.0.0 queued\r\n".into()
            }
            "RSET" | "NOOP" => "250 2.0.0 ok\r\n".into(),
            "QUIT" => {
                stream.write_all(b"221 2.0.0 bye\r\n").await.ok()?;
                return None;
            }
            _ => "502 5.5.2 command not recognized\r\n".into(),
        };
        stream.write_all(reply.as_bytes()).await.ok()?;
    }
}

/// `MAIL FROM:<a@b> SIZE=1` → `a@b`.
fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |index| index + 1);
    let end = line[start..].find('>').map_or(line.len(), |index| start + index);
    line[start..end].to_owned()
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|byte| !byte.is_ascii_whitespace() && *byte != b'=') {
        let Some(value) = ALPHABET.iter().position(|candidate| *candidate == byte) else { continue };
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// Headers (unfolded, in order) and the decoded body of a received message.
fn parse_mail(data: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = data.split_once("\r\n\r\n").expect("header/body separator");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.to_ascii_lowercase(), value.trim_start().to_owned()));
        }
    }
    let encoding = headers
        .iter()
        .find(|(name, _)| name == "content-transfer-encoding")
        .map(|(_, value)| value.to_ascii_lowercase())
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "quoted-printable" => quoted_printable_decode(body),
        "base64" => String::from_utf8(base64_decode(body)).expect("utf-8 body"),
        _ => body.to_owned(),
    };
    (headers, body.replace("\r\n", "\n"))
}

fn quoted_printable_decode(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'=' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(hex, 16) {
                out.push(value);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8(out).expect("utf-8 body")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// A test CA and a server certificate for 127.0.0.1: (acceptor, CA PEM).
fn test_tls() -> (TlsAcceptor, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "nightowl test smtp ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), ca_cert.pem())
}

fn parse_sinks(text: &str, base: &Path) -> Result<Vec<SinkSpec>, (String, String)> {
    #[derive(serde::Deserialize)]
    struct Root {
        sink: Vec<RawSink>,
    }
    let root: Root = toml::from_str(text).map_err(|error| ("toml".to_owned(), error.to_string()))?;
    validate_all(root.sink, base).map_err(|error| (error.key, error.message))
}

struct Running {
    stop: CancellationToken,
    tasks: TaskTracker,
    stats: Arc<SinkStats>,
}

impl Running {
    fn start(store: &Store, data_dir: &Path, spec: SinkSpec) -> Self {
        let sink =
            spec.build(&crate::sinks::BuildContext { data_dir: std::env::temp_dir() }).expect("builds");
        let stats = Arc::new(SinkStats::new(&spec.settings.name, sink.kind()));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(run_sink(store.clone(), data_dir.to_owned(), spec, sink, stats.clone(), stop.clone()));
        Self { stop, tasks, stats }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The resolved event of `firing`'s problem (same fingerprint, start and severity).
fn resolved_of(firing: &AlertEvent) -> AlertEvent {
    let mut resolved = firing.clone();
    resolved.id = alert::new_event_id();
    resolved.status = Status::Resolved;
    resolved.summary = "Disk /var 71.0% used (back below 85%)".into();
    resolved.value = 71.0;
    resolved.resolved_at = Some(jiff::Timestamp::now());
    resolved.emitted_at = jiff::Timestamp::now();
    resolved
}

#[tokio::test]
async fn firing_and_resolved_mails_thread_over_starttls_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca_pem) = test_tls();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.path().join("smtp.pass"), "s3cret pass\n").unwrap();
    let smtp = TestSmtp::start(Security::StartTls(acceptor)).await;
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let spec = parse_sinks(
        &format!(
            "[[sink]]\nname = \"psa-mail\"\n[sink.email]\nserver = \"127.0.0.1\"\nport = {}\n\
             username = \"nightowl\"\npassword_file = \"smtp.pass\"\n\
             from = \"nightowl <noc@msp.example.net>\"\nto = [\"tickets@psa.example.net\", \"noc@msp.example.net\"]\n\
             ca = \"ca.pem\"\ntimeout = \"5s\"\n",
            smtp.port
        ),
        dir.path(),
    )
    .expect("valid config")
    .remove(0);
    let running = Running::start(&store, dir.path(), spec);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut firing = event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P2);
    firing.summary = "Disk /var 96.2% used (critical at 95%)".into();
    firing.value = 96.2;
    let resolved = resolved_of(&firing);
    queue_events(&store, vec![firing.clone(), resolved.clone()]).await;
    eventually("two mails", 15, || (smtp.mails().len() == 2).then_some(())).await;

    let mails = smtp.mails();
    let parsed: Vec<_> = mails.iter().map(|mail| parse_mail(&mail.data)).collect();
    let (firing_headers, firing_body) = &parsed[0];
    let (resolved_headers, resolved_body) = &parsed[1];
    for mail in &mails {
        assert!(mail.tls, "sent after STARTTLS");
        assert_eq!(
            mail.auth.as_deref(),
            Some("\0nightowl\0s3cret pass"),
            "AUTH PLAIN with the file's password"
        );
        assert_eq!(mail.mail_from, "noc@msp.example.net");
        assert_eq!(mail.rcpt_to, ["tickets@psa.example.net", "noc@msp.example.net"]);
    }

    let token = format!("[nightowl:{}]", &firing.fingerprint[..12]);
    let firing_subject = header(firing_headers, "subject");
    let resolved_subject = header(resolved_headers, "subject");
    assert_eq!(
        firing_subject,
        format!("[P2] FIRING acme/srv-01 disk:/var: Disk /var 96.2% used (critical at 95%) {token}")
    );
    assert_eq!(
        resolved_subject,
        format!("[P2] RESOLVED acme/srv-01 disk:/var: Disk /var 71.0% used (back below 85%) {token}")
    );

    let firing_id = header(firing_headers, "message-id");
    assert!(firing_id.starts_with(&format!("<nightowl.{}.", firing.fingerprint)), "{firing_id}");
    assert!(firing_id.ends_with("@msp.example.net>"), "{firing_id}");
    assert_eq!(
        header(resolved_headers, "in-reply-to"),
        firing_id,
        "the resolved mail answers the firing one"
    );
    assert_eq!(header(resolved_headers, "references"), firing_id);
    assert_eq!(header(resolved_headers, "message-id"), format!("<nightowl.{}@msp.example.net>", resolved.id));
    assert!(firing_headers.iter().all(|(name, _)| name != "in-reply-to"));
    assert!(header(firing_headers, "content-type").starts_with("text/plain; charset=utf-8"));
    assert_eq!(header(firing_headers, "mime-version"), "1.0");

    for (body, event) in [(firing_body, &firing), (resolved_body, &resolved)] {
        let json: serde_json::Value = serde_json::to_value(event).unwrap();
        for (key, value) in json.as_object().unwrap() {
            let shown = match value {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(text) => text.replace('\n', " "),
                other => other.to_string().replace('\n', " "),
            };
            assert!(
                body.contains(&format!("\n{key}: {shown}\n"))
                    || body.starts_with(&format!("{key}: {shown}\n")),
                "field {key} missing from body:\n{body}"
            );
        }
        let raw = body.split_once("\nevent JSON:\n").expect("raw JSON section").1.trim_end();
        let back: AlertEvent = serde_json::from_str(raw).expect("raw JSON parses");
        assert_eq!(&back, event, "the raw JSON is the event");
    }
    assert!(
        firing_body.starts_with(&format!(
            "id: {}\nfingerprint: {}\nstatus: firing\nseverity: P2\n",
            firing.id, firing.fingerprint
        )),
        "{firing_body}"
    );
    assert!(resolved_body.contains("\nstatus: resolved\n"));
    eventually("both counted as delivered", 5, || (running.stats.report().delivered == 2).then_some(()))
        .await;
    running.stop().await;
}

#[tokio::test]
async fn a_550_dead_letters_and_a_451_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = TestSmtp::start(Security::Plain).await;
    smtp.recorded
        .rcpt_replies
        .lock()
        .unwrap()
        .extend(["550 5.1.1 mailbox unavailable".to_owned(), "451 4.3.0 try again later".to_owned()]);
    let (store, _writer) = Store::open(dir.path()).unwrap();
    // One lane: the 550 goes to the first event, the 451 to the second.
    let spec = parse_sinks(
        &format!(
            "[[sink]]\nname = \"relay\"\nconcurrency = 1\n[sink.email]\nserver = \"127.0.0.1\"\nport = {}\n\
             tls = \"none\"\nfrom = \"noc@msp.example.net\"\nto = [\"tickets@psa.example.net\"]\ntimeout = \"5s\"\n",
            smtp.port
        ),
        dir.path(),
    )
    .expect("valid config")
    .remove(0);
    let running = Running::start(&store, dir.path(), spec);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P1);
    let later = event("acme", "srv-02", "disk:/", Status::Firing, Severity::P3);
    queue_events(&store, vec![refused.clone()]).await;
    queue_events(&store, vec![later.clone()]).await;

    let letters = eventually("a dead letter", 10, || {
        let letters = Reader::open(dir.path()).unwrap().dead_letters(Some("sink:relay")).unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, refused.id);
    assert!(letters[0].error.contains("550"), "{}", letters[0].error);
    assert_eq!(letters[0].attempts, 1, "a 550 is not retried");

    eventually("the retried mail", 15, || (smtp.mails().len() == 1).then_some(())).await;
    let (headers, _) = parse_mail(&smtp.mails()[0].data);
    assert!(header(&headers, "subject").starts_with("[P3] FIRING acme/srv-02 disk:/:"));
    assert!(!smtp.mails()[0].tls);
    eventually("the retried mail counted", 5, || (running.stats.report().delivered == 1).then_some(())).await;
    let report = running.stats.report();
    assert_eq!((report.delivered, report.dead_lettered), (1, 1), "{report:?}");
    assert!(report.retried >= 1, "the 451 was retried: {report:?}");
    assert_eq!(*smtp.recorded.rcpt_commands.lock().unwrap(), 3, "550 once, 451 once, then accepted");
    assert_eq!(running.stats.health().state, HealthState::Healthy);
    running.stop().await;
}

#[tokio::test]
async fn implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca_pem) = test_tls();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let smtp = TestSmtp::start(Security::Implicit(acceptor)).await;
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let spec = parse_sinks(
        &format!(
            "[[sink]]\nname = \"smtps\"\n[sink.email]\nserver = \"127.0.0.1\"\nport = {}\ntls = \"tls\"\n\
             from = \"noc@msp.example.net\"\nto = [\"tickets@psa.example.net\"]\nca = \"ca.pem\"\ntimeout = \"5s\"\n",
            smtp.port
        ),
        dir.path(),
    )
    .unwrap()
    .remove(0);
    let running = Running::start(&store, dir.path(), spec);
    tokio::time::sleep(Duration::from_millis(100)).await;
    queue_events(&store, vec![event("acme", "srv-01", "disk:/", Status::Firing, Severity::P1)]).await;
    eventually("the mail", 10, || (smtp.mails().len() == 1).then_some(())).await;
    assert!(smtp.mails()[0].tls);
    running.stop().await;
}

#[test]
fn config_is_validated_naming_the_key() {
    let base = Path::new("/etc/nightowl");
    let sink = |body: &str| format!("[[sink]]\nname = \"mail\"\n[sink.email]\n{body}");
    let minimal = "server = \"smtp.example.net\"\nfrom = \"noc@msp.example.net\"\n";
    let (key, message) = parse_sinks(&sink(minimal), base).unwrap_err();
    assert_eq!(key, "sink[0].email.to", "{message}");
    let (key, _) = parse_sinks(&sink(&format!("{minimal}to = []\n")), base).unwrap_err();
    assert_eq!(key, "sink[0].email.to");
    let (key, _) = parse_sinks(&sink(&format!("{minimal}to = [\"not an address\"]\n")), base).unwrap_err();
    assert_eq!(key, "sink[0].email.to");
    let with_to = format!("{minimal}to = [\"tickets@psa.example.net\"]\n");
    assert!(parse_sinks(&sink(&with_to), base).is_ok());
    let (key, _) = parse_sinks(&sink(&format!("{with_to}tls = \"ssl\"\n")), base).unwrap_err();
    assert_eq!(key, "sink[0].email.tls");
    let (key, _) = parse_sinks(&sink(&format!("{with_to}username = \"u\"\n")), base).unwrap_err();
    assert_eq!(key, "sink[0].email.password_file");
    let (key, _) =
        parse_sinks(&sink("from = \"noc@msp.example.net\"\nto = [\"a@b.example\"]\n"), base).unwrap_err();
    assert_eq!(key, "sink[0].email.server");

    // tls = "none" with a password only to a relay on this machine.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), "pw\n").unwrap();
    let auth = "username = \"u\"\npassword_file = \"pass\"\ntls = \"none\"\n";
    let (key, message) = parse_sinks(&sink(&format!("{with_to}{auth}")), dir.path()).unwrap_err();
    assert_eq!(key, "sink[0].email.tls", "{message}");
    let local =
        format!("server = \"127.0.0.1\"\nfrom = \"noc@msp.example.net\"\nto = [\"a@b.example\"]\n{auth}");
    assert!(parse_sinks(&sink(&local), dir.path()).is_ok());

    // Through the collector's config loader: an unknown key is named with its table.
    let error = crate::config::Config::parse(
        &sink(&format!("{with_to}recipients = [\"x@y.example\"]\n")),
        "/etc/nightowl/collector.toml",
        base,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("key `sink[0].email.recipients`") && error.contains("unknown field"), "{error}");
    let error = crate::config::Config::parse(&sink(minimal), "/etc/nightowl/collector.toml", base)
        .unwrap_err()
        .to_string();
    assert!(error.contains("sink[0].email.to"), "{error}");
}
