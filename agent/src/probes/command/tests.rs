use std::collections::HashMap;

use super::*;
use proptest::prelude::*;

const PLUGINS: &str = "/usr/lib/nagios/plugins";

fn item(label: &str, value: Option<f64>, uom: &str) -> PerfItem {
    PerfItem {
        label: label.to_owned(),
        value,
        uom: uom.to_owned(),
        warn: Threshold::None,
        crit: Threshold::None,
        min: None,
        max: None,
    }
}

fn with(
    mut item: PerfItem,
    warn: Threshold,
    crit: Threshold,
    min: Option<f64>,
    max: Option<f64>,
) -> PerfItem {
    (item.warn, item.crit, item.min, item.max) = (warn, crit, min, max);
    item
}

fn number(value: f64) -> Threshold {
    Threshold::Number(value)
}

fn range(text: &str) -> Threshold {
    Threshold::Range(text.to_owned())
}

#[test]
fn perfdata_table() {
    use Threshold::None as No;
    let cases: Vec<(&str, Vec<PerfItem>, usize)> = vec![
        ("", vec![], 0),
        ("   \t\n ", vec![], 0),
        // check_tcp
        (
            "time=0.000203s;;;0.000000;10.000000",
            vec![with(item("time", Some(0.000203), "s"), No, No, Some(0.0), Some(10.0))],
            0,
        ),
        // check_disk
        (
            "/=19069403136B;108221012377;162331518566;0;270552530944",
            vec![with(
                item("/", Some(19069403136.0), "B"),
                number(108221012377.0),
                number(162331518566.0),
                Some(0.0),
                Some(270552530944.0),
            )],
            0,
        ),
        // Quoted label with a space, trailing empty fields.
        ("'rt time'=1.5s;;", vec![item("rt time", Some(1.5), "s")], 0),
        // '' inside quotes is one quote; '=' inside quotes is part of the label.
        ("'it''s'=3 'a=b'=4", vec![item("it's", Some(3.0), ""), item("a=b", Some(4.0), "")], 0),
        ("''''=1", vec![item("'", Some(1.0), "")], 0),
        (
            "conns=0;5;10;0",
            vec![with(item("conns", Some(0.0), ""), number(5.0), number(10.0), Some(0.0), None)],
            0,
        ),
        (
            "load1=0.5;15.000;30.000;0; load5=0.3;10;25;0;",
            vec![
                with(item("load1", Some(0.5), ""), number(15.0), number(30.0), Some(0.0), None),
                with(item("load5", Some(0.3), ""), number(10.0), number(25.0), Some(0.0), None),
            ],
            0,
        ),
        // Ranges are kept as ranges.
        (
            "rta=0.05ms;200:;@500;0 pl=0%;~:5;10:20",
            vec![
                with(item("rta", Some(0.05), "ms"), range("200:"), range("@500"), Some(0.0), None),
                with(item("pl", Some(0.0), "%"), range("~:5"), range("10:20"), None, None),
            ],
            0,
        ),
        ("pl=U;;", vec![item("pl", None, "")], 0),
        (
            "x=-1.5e3 y=+2 z=.5 w=3.",
            vec![
                item("x", Some(-1500.0), ""),
                item("y", Some(2.0), ""),
                item("z", Some(0.5), ""),
                item("w", Some(3.0), ""),
            ],
            0,
        ),
        // An 'e' without exponent digits is a unit, not half a number.
        ("x=5e", vec![item("x", Some(5.0), "e")], 0),
        (
            "temp=40C size=2MB c=17c",
            vec![item("temp", Some(40.0), "C"), item("size", Some(2.0), "MB"), item("c", Some(17.0), "c")],
            0,
        ),
        // Extra fields are ignored; junk fields are absent.
        ("a=1;;;;;;extra", vec![item("a", Some(1.0), "")], 0),
        ("a=1;x;y;z;w", vec![item("a", Some(1.0), "")], 0),
        ("a=1;5ms;;-;", vec![item("a", Some(1.0), "")], 0),
        // Whitespace of any kind separates items.
        (
            "a=1\tb=2\nc=3\r\n",
            vec![item("a", Some(1.0), ""), item("b", Some(2.0), ""), item("c", Some(3.0), "")],
            0,
        ),
        ("'Größe'=5MiB", vec![item("Größe", Some(5.0), "MiB")], 0),
        // Malformed items are skipped and counted; good neighbours survive.
        ("good=1 bad good2=2", vec![item("good", Some(1.0), ""), item("good2", Some(2.0), "")], 1),
        ("novalue", vec![], 1),
        ("=5", vec![], 1),
        ("a=", vec![], 1),
        ("a=abc", vec![], 1),
        ("a=1x2", vec![], 1),
        ("a=1,5", vec![], 1),
        ("a=nan b=inf c=1e999 d=-", vec![], 4),
        ("a b=1", vec![item("b", Some(1.0), "")], 1),
        ("'a b'c=1 d=2", vec![item("d", Some(2.0), "")], 1),
        ("a =1", vec![], 2),
        // An unterminated quote ends the parse.
        ("x=1 'unterminated=5 y=2", vec![item("x", Some(1.0), "")], 1),
        ("'", vec![], 1),
        ("|", vec![], 1),
        ("====", vec![], 1),
        (";;;", vec![], 1),
    ];
    for (text, items, skipped) in cases {
        let parsed = parse_perfdata(text);
        assert_eq!(parsed, Perfdata { items, skipped }, "{text:?}");
    }
}

#[test]
fn plugin_output_message_and_perfdata_on_several_lines() {
    // The example of the plugin guidelines.
    let text = "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
                / 15272 MB (77%);\n\
                /boot 68 MB (69%);\n\
                /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
                /home=69357MB;253404;253409;0;253414 \n\
                /var/log=818MB;970;975;0;980\n";
    let parsed = parse_plugin_output(text);
    assert_eq!(parsed.message, "DISK OK - free space: / 3326 MB (56%);");
    let labels: Vec<&str> = parsed.perfdata.items.iter().map(|item| item.label.as_str()).collect();
    assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
    assert_eq!(parsed.perfdata.skipped, 0);

    let plain = parse_plugin_output("  OK: all good  \nlong text without perfdata\n");
    assert_eq!(plain, PluginOutput { message: "OK: all good".to_owned(), perfdata: Perfdata::default() });
    assert_eq!(parse_plugin_output(""), PluginOutput::default());
    assert_eq!(parse_plugin_output("|a=1").message, "");
    assert_eq!(parse_plugin_output("|a=1").perfdata.items, [item("a", Some(1.0), "")]);

    // Capped at 1 KiB, on a char boundary.
    let long = parse_plugin_output(&"é".repeat(2000));
    assert!(long.message.len() <= MAX_MESSAGE_BYTES && long.message.len() > 1000);
    assert!(long.message.chars().all(|c| c == 'é'));
}

#[test]
fn perf_metrics_convert_units_and_keep_simple_thresholds() {
    let items = parse_perfdata(
        "rt=150ms;200;500;0;1000 size=2MB;;;0;4KiB wait=250us up=3s used=50%;80;90;0;100 \
         hits=17c temp=40C;~:50;@60 pl=U;5;10 'Rt Time'=9 '***'=1 ok=1;10:;;;",
    )
    .items;
    let metrics = perf_metrics(&items, 250);
    let expected: HashMap<String, f64> = [
        ("rt", 0.15),
        ("rt_warn", 0.2),
        ("rt_crit", 0.5),
        ("rt_min", 0.0),
        ("rt_max", 1.0),
        ("size", 2.0 * 1024.0 * 1024.0),
        ("size_min", 0.0),
        // min/max are converted with the value's unit ("4KiB" itself is no number).
        ("wait", 0.00025),
        ("up", 3.0),
        ("used", 50.0),
        ("used_warn", 80.0),
        ("used_crit", 90.0),
        ("used_min", 0.0),
        ("used_max", 100.0),
        ("hits", 17.0),
        ("temp", 40.0),
        ("pl_warn", 5.0),
        ("pl_crit", 10.0),
        ("rt_time", 9.0),
        ("ok", 1.0),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    assert_eq!(metrics.len(), expected.len(), "{metrics:?}");
    for (name, value) in &expected {
        let got = metrics.get(name).unwrap_or_else(|| panic!("{name} missing: {metrics:?}"));
        assert!((got - value).abs() <= 1e-12 * value.abs().max(1.0), "{name}: {got} != {value}");
    }

    // Collisions: the first wins. The cap holds.
    let metrics = perf_metrics(&parse_perfdata("a=1 A=2 'a '=3").items, 250);
    assert_eq!(metrics, HashMap::from([("a".to_owned(), 1.0)]));
    let many: String = (0..300).map(|i| format!("m{i}=1;2;3;4;5 ")).collect();
    assert_eq!(perf_metrics(&parse_perfdata(&many).items, 248).len(), 248);
}

#[test]
fn metric_names_are_sanitised() {
    for (label, name) in [
        ("time", "time"),
        ("Rt Time", "rt_time"),
        ("/var/lib", "/var/lib"),
        ("C:\\ Used Space", "c_used_space"),
        ("eth0.rx-bytes", "eth0.rx-bytes"),
        ("__x__", "x"),
        ("a  b", "a_b"),
        ("Größe", "gr_e"),
        ("***", ""),
        ("", ""),
    ] {
        assert_eq!(metric_name(label), name, "{label:?}");
    }
    assert_eq!(metric_name(&"x".repeat(500)).len(), MAX_METRIC_NAME_BYTES);
}

fn allowed_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_METRIC_NAME_BYTES + 5
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_./-".contains(&b))
}

proptest! {
    #[test]
    fn random_text_never_panics(text in ".{0,300}") {
        let parsed = parse_plugin_output(&text);
        prop_assert!(parsed.message.len() <= MAX_MESSAGE_BYTES);
        let metrics = perf_metrics(&parsed.perfdata.items, 20);
        prop_assert!(metrics.len() <= 20);
        prop_assert!(metrics.keys().all(|name| allowed_name(name)), "{:?}", metrics);
        prop_assert!(metrics.values().all(|value| value.is_finite()));
    }

    #[test]
    fn perfdata_like_text_never_panics(text in "[a-zA-Z' =;:@~.0-9U%eE+|\n-]{0,200}") {
        let parsed = parse_perfdata(&text);
        for item in &parsed.items {
            prop_assert!(!item.label.is_empty());
            prop_assert!(item.value.is_none_or(f64::is_finite));
        }
        let metrics = perf_metrics(&parsed.items, 250);
        prop_assert!(metrics.keys().all(|name| allowed_name(name)), "{:?}", metrics);
    }

    #[test]
    fn well_formed_items_round_trip(
        label in "[a-z][a-z0-9 _']{0,20}",
        value in -1e12f64..1e12,
        warn in proptest::option::of(0f64..1e6),
    ) {
        let quoted = label.replace('\'', "''");
        let warn_text = warn.map(|w| w.to_string()).unwrap_or_default();
        let parsed = parse_perfdata(&format!("'{quoted}'={value}B;{warn_text};;0"));
        prop_assert_eq!(parsed.skipped, 0);
        prop_assert_eq!(parsed.items.len(), 1);
        let got = &parsed.items[0];
        prop_assert_eq!(&got.label, &label);
        prop_assert_eq!(got.value, Some(value));
        prop_assert_eq!(&got.warn, &warn.map_or(Threshold::None, Threshold::Number));
        prop_assert_eq!(got.min, Some(0.0));
    }
}

fn config(argv: &[&str]) -> CommandConfig {
    CommandConfig {
        name: "test".to_owned(),
        command: argv.iter().map(|arg| arg.to_string()).collect(),
        timeout: None,
        interval: None,
    }
}

#[test]
fn validate_names_the_problem() {
    assert_eq!(config(&["/usr/lib/nagios/plugins/check_dummy", "0"]).validate(), Ok(()));
    assert_eq!(config(&["check_dummy", "0"]).validate(), Ok(()));
    let cases = [
        (config(&[]), "command: must not be empty"),
        (config(&[""]), "command[0]: empty program"),
        (config(&["./check_x"]), "command[0]: \"./check_x\" is a relative path"),
        (config(&["plugins/check_x"]), "command[0]: \"plugins/check_x\" is a relative path"),
        (config(&["/bin/echo", "a\0b"]), "command[1]: contains a NUL"),
        (
            CommandConfig { timeout: Some(HumanDuration(Duration::from_millis(10))), ..config(&["/x"]) },
            "timeout: 10ms is out of range",
        ),
        (
            CommandConfig { timeout: Some(HumanDuration(Duration::from_secs(7200))), ..config(&["/x"]) },
            "timeout: 2h is out of range",
        ),
        (CommandConfig { name: "a b".to_owned(), ..config(&["/x"]) }, "name \"a b\""),
    ];
    for (config, prefix) in cases {
        let error = config.validate().unwrap_err();
        assert!(error.starts_with(prefix), "{config:?}: {error}");
    }
}

#[test]
fn config_deserializes_and_rejects_unknown_fields() {
    #[derive(Debug, Deserialize)]
    struct Wrapper {
        command: Vec<CommandConfig>,
    }
    let wrapper: Wrapper = toml::from_str(
        "[[command]]\nname = \"root\"\ncommand = [\"/usr/lib/nagios/plugins/check_disk\", \"-p\", \"/\"]\n\
         timeout = \"3s\"\ninterval = \"1m\"\n",
    )
    .unwrap();
    let parsed = &wrapper.command[0];
    assert_eq!(parsed.command, ["/usr/lib/nagios/plugins/check_disk", "-p", "/"]);
    assert_eq!(parsed.timeout(), Duration::from_secs(3));
    assert_eq!(parsed.interval, Some(HumanDuration(Duration::from_secs(60))));
    assert_eq!(config(&["/x"]).timeout(), DEFAULT_TIMEOUT);
    let error = toml::from_str::<Wrapper>("[[command]]\nname = \"x\"\ncommand = [\"/x\"]\nshell = true\n")
        .unwrap_err();
    assert!(error.to_string().contains("shell"), "{error}");
    let missing: Wrapper = toml::from_str("[[command]]\nname = \"x\"\n").unwrap();
    assert!(missing.command[0].validate().unwrap_err().starts_with("command: must not be empty"));
    let error = toml::from_str::<Wrapper>("[[command]]\nname = \"x\"\ncommand = \"/x -v\"\n").unwrap_err();
    assert!(error.to_string().contains("sequence"), "{error}");
}

fn output(code: Option<i32>, stdout: &str, stderr: &str) -> exec::ExecOutput {
    exec::ExecOutput {
        code,
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        truncated: false,
        elapsed: Duration::from_millis(12),
    }
}

#[test]
fn results_from_exit_codes_signals_and_errors() {
    let id = || "command:x".to_owned();
    let elapsed = Duration::from_millis(12);
    let ok = to_result(id(), Ok(output(Some(0), "OK - fine|a=1s\n", "")), elapsed);
    assert_eq!(
        (ok.status(), ok.message.as_str(), ok.kind.as_str()),
        (ProbeStatus::Ok, "OK - fine", "command")
    );
    assert_eq!(ok.metrics["a"], 1.0);
    assert_eq!(ok.metrics["exit_code"], 0.0);
    assert_eq!(ok.metrics["duration_ms"], 12.0);

    let odd = to_result(id(), Ok(output(Some(127), "", "sh: check_x: not found\n")), elapsed);
    assert_eq!(odd.status(), ProbeStatus::Unknown);
    assert_eq!(odd.message, "exit code 127 is not a plugin status (0-3): sh: check_x: not found");
    assert_eq!(odd.metrics["exit_code"], 127.0);

    let killed = to_result(id(), Ok(output(None, "", "")), elapsed);
    assert_eq!(killed.status(), ProbeStatus::Unknown);
    assert_eq!(killed.message, "the plugin was killed by a signal");
    assert!(!killed.metrics.contains_key("exit_code"));

    // Built-ins win over perfdata of the same name.
    let clash = to_result(id(), Ok(output(Some(1), "W|exit_code=9 duration_ms=1", "")), elapsed);
    assert_eq!((clash.metrics["exit_code"], clash.metrics["duration_ms"]), (1.0, 12.0));

    // A truncated output loses its last, possibly cut, item.
    let mut cut = output(Some(0), "OK|a=1 b=2 c=12", "");
    cut.truncated = true;
    let cut = to_result(id(), Ok(cut), elapsed);
    assert!(cut.metrics.contains_key("b") && !cut.metrics.contains_key("c"), "{cut:?}");

    let timed_out = to_result(
        id(),
        Err(ExecError::TimedOut { program: "/x".to_owned(), timeout: Duration::from_millis(300) }),
        Duration::from_millis(305),
    );
    assert_eq!(timed_out.status(), ProbeStatus::Unknown);
    assert!(timed_out.message.starts_with("timed out after 300ms"), "{timed_out:?}");
    assert_eq!(timed_out.metrics["duration_ms"], 305.0);
}

// --- With real plugins -------------------------------------------------------------

async fn run(argv: &[&str], timeout: Duration) -> CheckResult {
    let state = tempfile::tempdir().unwrap();
    let context = ProbeContext { state_dir: state.path().to_path_buf() };
    let config = CommandConfig { timeout: Some(HumanDuration(timeout)), ..config(argv) };
    assert_eq!(config.validate(), Ok(()));
    let mut results = CommandProbe::new(&config, &context).sample().await;
    assert_eq!(results.len(), 1, "{results:?}");
    let result = results.remove(0);
    assert_eq!((result.check_id.as_str(), result.kind.as_str()), ("command:test", "command"));
    result
}

/// The plugin's path, or `None` after a loud SKIP line.
fn plugin(name: &str) -> Option<String> {
    let path = format!("{PLUGINS}/{name}");
    if std::path::Path::new(&path).exists() {
        Some(path)
    } else {
        eprintln!("SKIP: {path} is missing (tests/run.sh installs monitoring-plugins-basic)");
        None
    }
}

#[tokio::test]
async fn check_dummy_exit_codes_become_statuses() {
    let dummy = plugin("check_dummy");
    for (code, status) in [
        (0, ProbeStatus::Ok),
        (1, ProbeStatus::Warning),
        (2, ProbeStatus::Critical),
        (3, ProbeStatus::Unknown),
    ] {
        let code_text = code.to_string();
        let script = format!("echo \"STATE: hello owl\"; exit {code}");
        let argv: Vec<&str> = match &dummy {
            Some(path) => vec![path, &code_text, "hello owl"],
            None => vec!["/bin/sh", "-c", &script],
        };
        let result = run(&argv, Duration::from_secs(10)).await;
        assert_eq!(result.status(), status, "{result:?}");
        assert!(result.message.ends_with(": hello owl"), "{result:?}");
        assert_eq!(result.metrics["exit_code"], f64::from(code));
        assert!(result.metrics["duration_ms"] >= 0.0);
    }
}

#[tokio::test]
async fn check_tcp_against_a_real_listener_and_a_closed_port() {
    let Some(check_tcp) = plugin("check_tcp") else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let result = run(&[&check_tcp, "-H", "127.0.0.1", "-p", &port], Duration::from_secs(10)).await;
    assert_eq!(result.status(), ProbeStatus::Ok, "{result:?}");
    assert!(result.message.starts_with("TCP OK"), "{result:?}");
    let time = result.metrics["time"];
    assert!((0.0..5.0).contains(&time), "{result:?}");
    assert_eq!(result.metrics["time_max"], 10.0);
    drop(listener);

    // The port is free again: nobody listens.
    let result = run(&[&check_tcp, "-H", "127.0.0.1", "-p", &port], Duration::from_secs(10)).await;
    assert_eq!(result.status(), ProbeStatus::Critical, "{result:?}");
    assert!(result.message.contains("refused"), "{result:?}");
    assert_eq!(result.metrics["exit_code"], 2.0);
}

#[cfg(unix)]
#[tokio::test]
async fn check_disk_on_root_follows_its_thresholds() {
    let Some(check_disk) = plugin("check_disk") else { return };
    let stat = rustix::fs::statvfs("/").unwrap();
    let frsize = stat.f_frsize.max(1) as f64;
    let (used, avail) = ((stat.f_blocks - stat.f_bfree) as f64 * frsize, stat.f_bavail as f64 * frsize);
    let total = stat.f_blocks as f64 * frsize;
    // check_disk's free % (of what users can use).
    let free_pct = avail / (used + avail) * 100.0;
    if !(4.0..96.0).contains(&free_pct) {
        eprintln!("SKIP: / is {free_pct:.1}% free; thresholds around it would be flaky");
        return;
    }
    let between_free_and_full = (free_pct + 100.0) / 2.0;
    for (warn, crit, status) in [
        (free_pct / 2.0, free_pct / 4.0, ProbeStatus::Ok),
        (between_free_and_full, free_pct / 2.0, ProbeStatus::Warning),
        (between_free_and_full, between_free_and_full, ProbeStatus::Critical),
    ] {
        let (warn, crit) = (format!("{warn:.1}%"), format!("{crit:.1}%"));
        let result = run(&[&check_disk, "-w", &warn, "-c", &crit, "-p", "/"], Duration::from_secs(10)).await;
        assert_eq!(result.status(), status, "-w {warn} -c {crit}: {result:?}");
        assert!(result.message.starts_with("DISK "), "{result:?}");
        let metrics = &result.metrics;
        assert!((metrics["/_max"] - total).abs() <= 0.01 * total, "{metrics:?} vs total {total}");
        assert!((metrics["/"] - used).abs() <= 0.05 * total, "{metrics:?} vs used {used}");
        assert_eq!(metrics["/_min"], 0.0);
        assert!(metrics["/_warn"] > 0.0 && metrics["/_crit"] > 0.0, "{metrics:?}");
    }
}

#[tokio::test]
async fn a_script_plugin_with_quoted_perfdata_labels() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check_db");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo \"CRITICAL - db down | conns=0;5;10;0 'rt time'=1.5s;;\"\n\
         echo \"replica lag unknown | 'it''s'=250ms\"\n\
         exit 2\n",
    )
    .unwrap();
    // Through /bin/sh rather than exec'ing the fresh file: a concurrent fork in another
    // test thread may still hold it open for writing (ETXTBSY).
    let result = run(&["/bin/sh", script.to_str().unwrap()], Duration::from_secs(10)).await;
    assert_eq!(result.status(), ProbeStatus::Critical, "{result:?}");
    assert_eq!(result.message, "CRITICAL - db down");
    let expected =
        [("conns", 0.0), ("conns_warn", 5.0), ("conns_crit", 10.0), ("conns_min", 0.0), ("rt_time", 1.5)];
    for (name, value) in expected {
        assert_eq!(result.metrics.get(name), Some(&value), "{name}: {result:?}");
    }
    assert_eq!(result.metrics["it_s"], 0.25);
    assert_eq!(result.metrics["exit_code"], 2.0);
    assert_eq!(result.metrics.len(), 8, "{result:?}");
}

#[tokio::test]
async fn a_hanging_plugin_is_unknown_quickly() {
    let started = Instant::now();
    let result = run(&["/bin/sleep", "30"], Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(result.status(), ProbeStatus::Unknown, "{result:?}");
    assert!(result.message.starts_with("timed out after 300ms"), "{result:?}");
    assert!(!result.metrics.contains_key("exit_code"));
    assert!(result.metrics["duration_ms"] >= 300.0, "{result:?}");
}

#[tokio::test]
async fn a_missing_plugin_is_unknown() {
    let result = run(&["/nonexistent/check_x"], Duration::from_secs(1)).await;
    assert_eq!(result.status(), ProbeStatus::Unknown);
    assert!(result.message.starts_with("cannot run /nonexistent/check_x"), "{result:?}");
}
