use std::time::Duration;

use super::*;

/// Long enough for any event of a change to arrive and its debounce to end, on a loaded
/// machine: a change expected here must have arrived by then.
const ARRIVES: Duration = Duration::from_secs(10);
/// How long a change that should not come is waited for: several debounce periods.
const QUIET: Duration = Duration::from_millis(1500);

fn setup() -> (tempfile::TempDir, PathBuf) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("watched.toml");
    std::fs::write(&path, "first = 1\n").unwrap();
    (directory, path)
}

async fn expect_change(changes: &mut FileChanges) {
    let change = tokio::time::timeout(ARRIVES, changes.next()).await.expect("no change reported");
    assert_eq!(change, Some(()));
}

async fn expect_quiet(changes: &mut FileChanges) {
    if let Ok(change) = tokio::time::timeout(QUIET, changes.next()).await {
        panic!("unexpected change reported: {change:?}");
    }
}

#[tokio::test]
async fn a_rename_over_the_file_is_one_change() {
    let (directory, path) = setup();
    let (_watcher, mut changes) = watch_file(&path).unwrap();
    // The way editors and config management save: write beside, rename over.
    let temporary = directory.path().join(".watched.toml.tmp");
    std::fs::write(&temporary, "second = 2\n").unwrap();
    std::fs::rename(&temporary, &path).unwrap();
    expect_change(&mut changes).await;
    expect_quiet(&mut changes).await;
    // The watch outlives the rename: the new inode's edits are seen too.
    std::fs::write(&path, "third = 3\n").unwrap();
    expect_change(&mut changes).await;
}

#[tokio::test]
async fn a_burst_of_writes_is_one_change() {
    let (_directory, path) = setup();
    let (_watcher, mut changes) = watch_file(&path).unwrap();
    for round in 0..10 {
        std::fs::write(&path, format!("round = {round}\n")).unwrap();
    }
    expect_change(&mut changes).await;
    expect_quiet(&mut changes).await;
}

#[tokio::test]
async fn another_file_in_the_directory_is_no_change() {
    let (directory, path) = setup();
    let (_watcher, mut changes) = watch_file(&path).unwrap();
    std::fs::write(directory.path().join("other.toml"), "other = 1\n").unwrap();
    std::fs::rename(directory.path().join("other.toml"), directory.path().join("moved.toml")).unwrap();
    expect_quiet(&mut changes).await;
    // The watch was live all along: a change to the file itself is reported.
    std::fs::write(&path, "second = 2\n").unwrap();
    expect_change(&mut changes).await;
}

#[tokio::test]
async fn reading_the_file_is_no_change() {
    let (_directory, path) = setup();
    let (_watcher, mut changes) = watch_file(&path).unwrap();
    for _ in 0..3 {
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first = 1\n");
    }
    expect_quiet(&mut changes).await;
}

#[tokio::test]
async fn the_changes_end_with_the_watcher() {
    let (_directory, path) = setup();
    let (watcher, mut changes) = watch_file(&path).unwrap();
    drop(watcher);
    let end = tokio::time::timeout(ARRIVES, changes.next()).await.expect("the changes did not end");
    assert_eq!(end, None);
}
