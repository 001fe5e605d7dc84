use super::*;

fn seen(path: &str, mtime_s: i64, size: Option<u64>) -> SeenFile {
    SeenFile { path: path.into(), mtime_ns: mtime_s * 1_000_000_000, size }
}

fn source(tolerance: f64) -> FilesSource {
    FilesSource::new("/b/*".into(), Duration::ZERO, tolerance, Duration::from_secs(5), None)
}

fn listed(newest: Option<SeenFile>) -> Scan {
    Scan { newest, being_written: 0, error: None }
}

#[test]
fn verdicts_compare_with_the_previous_newest_and_stick_to_their_file() {
    let mut files = source(0.0);
    let now = 10_000.0;
    let first = files.judge(listed(Some(seen("/b/1", 1000, Some(100)))), now).unwrap();
    assert_eq!(
        (first.last_result, first.last_success, first.size_bytes),
        (Some(true), Some(1000.0), Some(100))
    );

    // Smaller than the previous newest: a failure, and the last success stays.
    let shrunk = files.judge(listed(Some(seen("/b/2", 2000, Some(99)))), now).unwrap();
    assert_eq!((shrunk.last_result, shrunk.last_success), (Some(false), Some(1000.0)));
    assert!(shrunk.detail.contains("shrank"), "{}", shrunk.detail);
    // Same file at the next sample: still a failure.
    let again = files.judge(listed(Some(seen("/b/2", 2000, Some(99)))), now).unwrap();
    assert_eq!(again.last_result, Some(false));
    // The next file is compared with the shrunk one.
    let next = files.judge(listed(Some(seen("/b/3", 3000, Some(99)))), now).unwrap();
    assert_eq!((next.last_result, next.last_success), (Some(true), Some(3000.0)));

    let empty = files.judge(listed(Some(seen("/b/4", 4000, Some(0)))), now).unwrap();
    assert_eq!(empty.last_result, Some(false));
    assert!(empty.detail.contains("empty"), "{}", empty.detail);

    // Directories have no size: never empty, never shrunk.
    let directory = files.judge(listed(Some(seen("/b/5", 5000, None))), now).unwrap();
    assert_eq!((directory.last_result, directory.size_bytes), (Some(true), None));

    let none = files.judge(listed(None), now).unwrap();
    assert_eq!((none.last_result, none.last_success), (Some(false), Some(5000.0)));
    assert!(none.detail.contains("no file matches /b/*"), "{}", none.detail);
}

#[test]
fn shrink_tolerance_and_in_progress_files() {
    let mut files = source(10.0);
    let now = 10_000.0;
    files.judge(listed(Some(seen("/b/1", 1000, Some(1000)))), now).unwrap();
    let within = files.judge(listed(Some(seen("/b/2", 2000, Some(901)))), now).unwrap();
    assert_eq!(within.last_result, Some(true));
    let beyond = files.judge(listed(Some(seen("/b/3", 3000, Some(800)))), now).unwrap();
    assert_eq!(beyond.last_result, Some(false));

    let only_in_progress = files.judge(Scan { newest: None, being_written: 2, error: None }, now).unwrap();
    assert_eq!((only_in_progress.last_result, only_in_progress.last_success), (None, Some(2000.0)));

    let unreadable = Scan { newest: None, being_written: 0, error: Some("permission denied".into()) };
    assert!(files.judge(unreadable, now).unwrap_err().contains("permission denied"));
}

#[test]
fn state_for_another_pattern_is_dropped() {
    let saved = PathState {
        pattern: "/old/*".into(),
        newest: Some(seen("/old/1", 1, Some(5))),
        newest_failure: None,
        last_success_s: Some(1.0),
    };
    let files = FilesSource::new("/b/*".into(), Duration::ZERO, 0.0, Duration::from_secs(1), Some(saved));
    assert_eq!(files.state.newest, None);
    assert_eq!(files.state.pattern, "/b/*");
}
