//! The checks the collector raises about an agent itself, not from the agent's reports.
//! Their alert state lives in `check_states` like any other check's. A leaf module:
//! `evaluate`, `queue`, `offline` and `ingest` all import these ids from below.

/// The agent went silent (`crate::offline`).
pub mod offline {
    /// Check id of the offline alert.
    pub const CHECK: &str = "agent";
    /// Rule name of the offline alert.
    pub const RULE: &str = "agent_offline";
}

/// The collector refused the agent's reports (over `[limits]`; `crate::ingest`).
pub mod reports {
    /// Check id of the refused-reports alert. The agent cannot retire it.
    pub const CHECK: &str = "agent:reports";
    /// Rule name of the refused-reports alert.
    pub const RULE: &str = "reports_refused";
}
