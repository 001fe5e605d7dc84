use super::*;

#[test]
fn names_map_to_distinct_files() {
    let dir = Path::new("/state/probes");
    assert_eq!(file_path(dir, "db"), Path::new("/state/probes/backup-db.json"));
    assert_eq!(file_path(dir, "a/b"), Path::new("/state/probes/backup-a%2Fb.json"));
    assert_eq!(file_path(dir, ".."), Path::new("/state/probes/backup-...json"));
    assert_ne!(file_path(dir, "a/b"), file_path(dir, "a_2Fb"));
}

#[test]
fn store_then_load_and_bad_files_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(&dir.path().join("probes"), "db");
    assert_eq!(load(&path), (StateFile::default(), None));

    let state = StateFile {
        version: VERSION,
        command: Some(command::CommandState { command: vec!["true".into()], last_success_s: Some(12.5) }),
        ..StateFile::default()
    };
    let bytes = serde_json::to_vec(&state).unwrap();
    store(&path, &bytes).unwrap();
    assert_eq!(load(&path), (state, Some(bytes)));

    std::fs::write(&path, b"{not json").unwrap();
    assert_eq!(load(&path).0, StateFile::default());
    std::fs::write(&path, br#"{"version": 99}"#).unwrap();
    assert_eq!(load(&path).0, StateFile::default());
}
