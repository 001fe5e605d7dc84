use super::*;

#[test]
fn names() {
    for good in ["nginx", "db-nightly", "gw.branch_2", "postgres@main", "a/b"] {
        assert!(validate_name(good).is_ok(), "{good}");
    }
    for bad in ["", "with space", "a:b", &"x".repeat(65), "ü"] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
}
