use super::*;

fn tail(success: &str, failure: &str) -> Tail {
    Tail {
        path: PathBuf::from("/nonexistent/backup.log"),
        success: Some(Regex::new(success).unwrap()),
        failure: Some(Regex::new(failure).unwrap()),
        open: None,
        resume: true,
        state: LogState {
            file: String::new(),
            success: None,
            failure: None,
            identity: None,
            offset: 0,
            last_result: None,
            last_success_s: None,
            last_failure_s: None,
            last_failure_line: None,
        },
        read_error: None,
    }
}

#[test]
fn the_latest_matching_line_of_a_pass_decides() {
    let mut tail = tail("^done", "ERROR");
    assert!(!tail.match_lines(b"starting\nworking\n", 10.0));
    assert_eq!(tail.state.last_result, None);

    assert!(tail.match_lines(b"done ok\n", 20.0));
    assert_eq!((tail.state.last_result, tail.state.last_success_s), (Some(true), Some(20.0)));

    // A success followed by a failure in one pass: the success is not credited.
    assert!(tail.match_lines(b"done\n  ERROR: disk full  \r\n", 30.0));
    assert_eq!(tail.state.last_result, Some(false));
    assert_eq!(tail.state.last_success_s, Some(20.0));
    assert_eq!(tail.state.last_failure_line.as_deref(), Some("ERROR: disk full"));

    // A failure, then a success (a retry): success wins; the failure line is kept.
    assert!(tail.match_lines(b"ERROR: again\ndone\n", 40.0));
    assert_eq!((tail.state.last_result, tail.state.last_success_s), (Some(true), Some(40.0)));
    assert_eq!(tail.state.last_failure_line.as_deref(), Some("ERROR: again"));

    // A line matching both patterns is a failure.
    assert!(tail.match_lines(b"done with ERROR\n", 50.0));
    assert_eq!(tail.state.last_result, Some(false));
}

#[test]
fn failure_lines_are_capped() {
    let mut tail = tail("^done", "ERROR");
    let long = format!("ERROR {}\n", "é".repeat(500));
    tail.match_lines(long.as_bytes(), 1.0);
    let kept = tail.state.last_failure_line.unwrap();
    assert!(kept.len() <= MAX_LINE_BYTES && kept.starts_with("ERROR é"), "{kept}");
}

#[test]
fn a_missing_file_with_nothing_known_cannot_be_checked() {
    let mut tail = tail("^done", "ERROR");
    assert!(!tail.poll(true));
    let reason = tail.evidence(0.0).unwrap_err();
    assert!(reason.contains("/nonexistent/backup.log"), "{reason}");
    tail.state.last_result = Some(true);
    tail.state.last_success_s = Some(5.0);
    let evidence = tail.evidence(10.0).unwrap();
    assert_eq!(evidence.last_success, Some(5.0));
    assert!(evidence.detail.contains("cannot read"), "{}", evidence.detail);
}

#[test]
fn only_the_last_mebibyte_of_a_big_backlog_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    let mut content = b"ERROR early failure\n".to_vec();
    let filler = b"just a line of progress output that matches nothing at all\n";
    while content.len() < 3 * 1024 * 1024 {
        content.extend_from_slice(filler);
    }
    content.extend_from_slice(b"done late\n");
    std::fs::write(&path, &content).unwrap();
    let mut tail = tail("^done", "ERROR");
    tail.path = path;
    assert!(tail.poll(true));
    assert_eq!(tail.state.last_result, Some(true));
    assert_eq!(tail.state.last_failure_line, None);
    assert_eq!(tail.state.offset, content.len() as u64);
}

#[test]
fn an_unterminated_line_waits_until_the_file_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.log");
    std::fs::write(&path, b"done pa").unwrap();
    let mut tail = tail("^done part", "ERROR");
    tail.path = path.clone();
    assert!(!tail.poll(true));
    assert_eq!(tail.state.offset, 0);
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(10)).unwrap();
    // The watcher never takes it; a sample does once the writer is quiet.
    assert!(!tail.poll(false));
    std::fs::write(&path, b"done part two").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(10)).unwrap();
    assert!(tail.poll(true));
    assert_eq!(tail.state.offset, 13);
}
