//! `windows = …`: a Windows service's state from the Service Control Manager.
//!
//! A sample opens the SCM (connect right only) and the service (query-status right
//! only) in a blocking thread and reads its status: `running` is 1 in the Running state,
//! `pid` is the service's process. The SCM can notify status changes only through a
//! callback API that needs `unsafe`; instead [`WindowsWatch::changed`] queries the status
//! every [`POLL_EVERY`] (one cheap local RPC) and resolves when it differs from the last
//! sample's. Elsewhere every sample is UNKNOWN.

use std::time::Duration;

use nightowl_proto::CheckResult;

use super::KIND;
use crate::probes::unknown_result;

/// How often `changed` asks the SCM (Windows).
#[cfg_attr(not(windows), allow(dead_code))]
const POLL_EVERY: Duration = Duration::from_secs(1);

/// A service name: 1–256 characters, no '/' or '\'.
pub(super) fn validate_service(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "{name:?} is not a service name; use the service name (e.g. \"Spooler\"), not the display name"
        ));
    }
    Ok(())
}

pub(super) struct WindowsWatch {
    #[cfg_attr(not(windows), allow(dead_code))]
    service: String,
    /// The state reported by the last sample (Windows), to tell a change.
    #[cfg_attr(not(windows), allow(dead_code))]
    last_state: Option<String>,
}

impl WindowsWatch {
    pub(super) fn new(service: &str) -> Self {
        Self { service: service.to_owned(), last_state: None }
    }
}

#[cfg(not(windows))]
impl WindowsWatch {
    pub(super) async fn sample(&mut self, check_id: String) -> CheckResult {
        unknown_result(
            check_id,
            KIND,
            "windows services exist only on Windows; use process = \"<name>\" or port = <number> instead"
                .into(),
        )
    }

    pub(super) async fn changed(&mut self) {
        std::future::pending().await
    }
}

#[cfg(windows)]
impl WindowsWatch {
    pub(super) async fn sample(&mut self, check_id: String) -> CheckResult {
        let status = match query_off_runtime(&self.service).await {
            Ok(status) => status,
            Err(why) => {
                self.last_state = None;
                return unknown_result(check_id, KIND, why);
            }
        };
        let running = status.state == "Running";
        let up = if running { 1.0 } else { 0.0 };
        let mut metrics =
            std::collections::HashMap::from([("up".to_owned(), up), ("running".to_owned(), up)]);
        if let Some(pid) = status.pid.filter(|_| running) {
            metrics.insert("pid".to_owned(), f64::from(pid));
        }
        let message = format!("{}: state={}", self.service, status.state);
        self.last_state = Some(status.state);
        crate::probes::ok_result(check_id, KIND, metrics, message)
    }

    /// Resolves when the service's state differs from the last sample's.
    pub(super) async fn changed(&mut self) {
        if self.last_state.is_none() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let now = query_off_runtime(&self.service).await.ok().map(|status| status.state);
            if now != self.last_state {
                return;
            }
        }
    }
}

/// What the SCM says about a service.
#[cfg(windows)]
struct Status {
    /// "Running", "Stopped", "StartPending", …
    state: String,
    pid: Option<u32>,
}

#[cfg(windows)]
async fn query_off_runtime(service: &str) -> Result<Status, String> {
    let service = service.to_owned();
    match crate::blocking::spawn("service query", move || imp::query(&service)).await {
        Ok(result) => result,
        Err(error) => Err(format!("service query failed: {error}")),
    }
}

#[cfg(windows)]
mod imp {
    use windows_service::service::ServiceAccess;
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    use super::Status;
    use crate::probes::service::error_chain;

    pub(super) fn query(name: &str) -> Result<Status, String> {
        let manager =
            ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT).map_err(|error| {
                format!("cannot connect to the service control manager: {}", error_chain(&error))
            })?;
        let service = manager
            .open_service(name, ServiceAccess::QUERY_STATUS)
            .map_err(|error| format!("cannot open service {name:?}: {}", error_chain(&error)))?;
        let status = service
            .query_status()
            .map_err(|error| format!("cannot query service {name:?}: {}", error_chain(&error)))?;
        Ok(Status { state: format!("{:?}", status.current_state), pid: status.process_id })
    }
}
