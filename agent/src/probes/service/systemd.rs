//! `systemd = …`: a unit's state from systemd over D-Bus (Linux).
//!
//! - systemd runs when `/run/systemd/system` exists (what `sd_booted()` checks); when it
//!   does not, or the system bus cannot be reached, the sample is UNKNOWN and says to
//!   watch a process or a port instead.
//! - On first use the probe connects to the system bus, calls `Manager.Subscribe` (systemd
//!   only emits unit signals while someone is subscribed), `Manager.LoadUnit(name)` for
//!   the unit's object path, and subscribes to that object's `PropertiesChanged` for the
//!   `org.freedesktop.systemd1.Unit` interface *before* reading any state, so no change is
//!   lost. [`SystemdWatch::changed`] resolves on a change of ActiveState or SubState.
//! - A sample reads LoadState, ActiveState, SubState, ActiveEnterTimestamp and, for
//!   services, NRestarts (systemd ≥ 235). A failed call drops the connection; the next
//!   sample reconnects.
//! - Connecting and every call are bounded by 5 s.

use nightowl_proto::CheckResult;

use super::KIND;
use crate::probes::unknown_result;

/// The UNKNOWN message where systemd does not run.
const NOT_RUNNING: &str =
    "systemd is not running on this host; use process = \"<name>\" or port = <number> instead";

/// Unit types; a name without one of these suffixes gets ".service".
const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// A unit name as systemd accepts it: 1–255 characters of letters, digits, ":-_.\@".
pub(super) fn validate_unit(unit: &str) -> Result<(), String> {
    let ok = !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with('.')
        && unit.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!("{unit:?} is not a unit name; use e.g. \"nginx.service\" or \"nginx\""))
    }
}

/// "nginx" → "nginx.service"; names with a unit suffix are kept.
pub(super) fn unit_name(unit: &str) -> String {
    if UNIT_SUFFIXES.iter().any(|suffix| unit.ends_with(suffix)) {
        unit.to_owned()
    } else {
        format!("{unit}.service")
    }
}

pub(super) use imp::SystemdWatch;

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub(in super::super) struct SystemdWatch {
        _unit: String,
    }

    impl SystemdWatch {
        pub(in super::super) fn new(unit: &str) -> Self {
            Self { _unit: unit_name(unit) }
        }

        pub(in super::super) async fn sample(&mut self, check_id: String) -> CheckResult {
            unknown_result(check_id, KIND, NOT_RUNNING.to_owned())
        }

        pub(in super::super) async fn changed(&mut self) {
            std::future::pending().await
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;
    use std::future::Future;
    use std::path::Path;
    use std::time::Duration;

    use tokio_stream::StreamExt;
    use zbus::OwnedObjectPath;
    use zbus::fdo::{PropertiesChangedStream, PropertiesProxy};
    use zbus::proxy::CacheProperties;

    use super::*;
    use crate::probes::ok_result;
    use crate::probes::service::error_chain;

    /// Bounds connecting and each D-Bus call.
    const CALL_TIMEOUT: Duration = Duration::from_secs(5);
    const DESTINATION: &str = "org.freedesktop.systemd1";
    const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

    #[zbus::proxy(
        interface = "org.freedesktop.systemd1.Manager",
        default_service = "org.freedesktop.systemd1",
        default_path = "/org/freedesktop/systemd1"
    )]
    trait Manager {
        /// Enables unit signals for this client until it disconnects.
        fn subscribe(&self) -> zbus::Result<()>;
        /// The unit's object path, loading the unit from disk if needed.
        fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    }

    #[zbus::proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
    trait Unit {
        #[zbus(property)]
        fn load_state(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn active_state(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn sub_state(&self) -> zbus::Result<String>;
        /// Microseconds since the epoch; 0 when never active.
        #[zbus(property)]
        fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.systemd1.Service",
        default_service = "org.freedesktop.systemd1"
    )]
    trait Service {
        #[zbus(property, name = "NRestarts")]
        fn n_restarts(&self) -> zbus::Result<u32>;
    }

    /// Which bus to ask.
    enum Bus {
        /// The system bus, where systemd (PID 1) is.
        System,
        /// A bus address (tests: a private bus with a `systemd --user`).
        #[cfg_attr(not(test), allow(dead_code))]
        Address(String),
    }

    /// An open connection with the unit's proxies and its change subscription.
    struct Session {
        // Kept so the connection (and the subscription) lives as long as the session.
        _connection: zbus::Connection,
        unit: UnitProxy<'static>,
        service: Option<ServiceProxy<'static>>,
        changes: PropertiesChangedStream,
    }

    pub(in super::super) struct SystemdWatch {
        unit: String,
        bus: Bus,
        session: Option<Session>,
    }

    /// What a sample read.
    struct State {
        load: String,
        active: String,
        sub: String,
        active_enter_us: u64,
        n_restarts: Option<u32>,
    }

    impl SystemdWatch {
        pub(in super::super) fn new(unit: &str) -> Self {
            Self { unit: unit_name(unit), bus: Bus::System, session: None }
        }

        /// Watches `unit` through the bus at `address` (which need not be the system bus).
        #[cfg(test)]
        pub(in super::super) fn at_address(unit: &str, address: &str) -> Self {
            Self { unit: unit_name(unit), bus: Bus::Address(address.to_owned()), session: None }
        }

        pub(in super::super) async fn sample(&mut self, check_id: String) -> CheckResult {
            if matches!(self.bus, Bus::System) && !Path::new("/run/systemd/system").exists() {
                self.session = None;
                return unknown_result(check_id, KIND, NOT_RUNNING.to_owned());
            }
            if self.session.is_none() {
                match self.connect().await {
                    Ok(session) => self.session = Some(session),
                    Err(why) => {
                        return unknown_result(
                            check_id,
                            KIND,
                            format!(
                                "systemd is not reachable over D-Bus ({why}); is systemd running? \
                                 Otherwise use process = \"<name>\" or port = <number> instead"
                            ),
                        );
                    }
                }
            }
            let Some(session) = &self.session else {
                return unknown_result(check_id, KIND, "no D-Bus session".into());
            };
            let state = match read_state(session).await {
                Ok(state) => state,
                Err(why) => {
                    self.session = None;
                    return unknown_result(check_id, KIND, format!("cannot read unit {}: {why}", self.unit));
                }
            };
            if state.load == "not-found" {
                return unknown_result(
                    check_id,
                    KIND,
                    format!("unit {} not found (LoadState=not-found); check the name", self.unit),
                );
            }
            let active = state.active == "active";
            let up = if active { 1.0 } else { 0.0 };
            let mut metrics = HashMap::from([("up".to_owned(), up), ("active".to_owned(), up)]);
            if let Some(n_restarts) = state.n_restarts {
                metrics.insert("n_restarts".to_owned(), f64::from(n_restarts));
            }
            if active && state.active_enter_us > 0 {
                metrics.insert("active_since_s".to_owned(), state.active_enter_us as f64 / 1e6);
            }
            let message = format!("{}: ActiveState={} SubState={}", self.unit, state.active, state.sub);
            ok_result(check_id, KIND, metrics, message)
        }

        /// Resolves when the unit's ActiveState or SubState changed, or the connection
        /// ended (so the next sample reports it). Pending while not connected.
        pub(in super::super) async fn changed(&mut self) {
            let Some(session) = &mut self.session else {
                return std::future::pending().await;
            };
            loop {
                let Some(signal) = session.changes.next().await else {
                    tracing::debug!(unit = %self.unit, "d-bus signal stream ended");
                    self.session = None;
                    return;
                };
                let relevant = match signal.args() {
                    Ok(args) => {
                        args.changed_properties()
                            .keys()
                            .any(|name| matches!(*name, "ActiveState" | "SubState"))
                            || args
                                .invalidated_properties()
                                .iter()
                                .any(|name| matches!(*name, "ActiveState" | "SubState"))
                    }
                    // Cannot tell: sampling once too often is harmless.
                    Err(_) => true,
                };
                if relevant {
                    return;
                }
            }
        }

        async fn connect(&self) -> Result<Session, String> {
            let builder = match &self.bus {
                Bus::System => zbus::connection::Builder::system(),
                Bus::Address(address) => zbus::connection::Builder::address(address.as_str()),
            };
            let connection =
                bounded("connecting to the bus", builder.method_timeout(CALL_TIMEOUT).build()).await?;
            let manager = bounded("Manager proxy", ManagerProxy::new(&connection)).await?;
            if let Err(why) = bounded("Subscribe", manager.subscribe()).await {
                // Only costs the instant notification; samples still work.
                tracing::warn!(unit = %self.unit, %why, "cannot subscribe to systemd signals");
            }
            let path = bounded("LoadUnit", manager.load_unit(&self.unit)).await?;
            let properties = PropertiesProxy::builder(&connection)
                .destination(DESTINATION)
                .path(path.clone())
                .cache_properties(CacheProperties::No);
            let properties = bounded("Properties proxy", properties.build()).await?;
            // Subscribe before the first read so no change is missed.
            let changes = bounded(
                "PropertiesChanged subscription",
                properties.receive_properties_changed_with_args(&[(0, UNIT_INTERFACE)]),
            )
            .await?;
            let unit =
                UnitProxy::builder(&connection).path(path.clone()).cache_properties(CacheProperties::No);
            let unit = bounded("Unit proxy", unit.build()).await?;
            let service = if self.unit.ends_with(".service") {
                let service =
                    ServiceProxy::builder(&connection).path(path).cache_properties(CacheProperties::No);
                Some(bounded("Service proxy", service.build()).await?)
            } else {
                None
            };
            Ok(Session { _connection: connection, unit, service, changes })
        }
    }

    async fn read_state(session: &Session) -> Result<State, String> {
        let unit = &session.unit;
        let load = bounded("LoadState", unit.load_state()).await?;
        let active = bounded("ActiveState", unit.active_state()).await?;
        let sub = bounded("SubState", unit.sub_state()).await?;
        let active_enter_us = bounded("ActiveEnterTimestamp", unit.active_enter_timestamp()).await?;
        let n_restarts = match &session.service {
            // Absent before systemd 235: leave the metric out.
            Some(service) => bounded("NRestarts", service.n_restarts()).await.ok(),
            None => None,
        };
        Ok(State { load, active, sub, active_enter_us, n_restarts })
    }

    fn failed(step: &str, error: &zbus::Error) -> String {
        format!("{step}: {}", error_chain(error))
    }

    /// Runs a D-Bus step within [`CALL_TIMEOUT`]; the error names the step.
    async fn bounded<T>(step: &str, work: impl Future<Output = zbus::Result<T>>) -> Result<T, String> {
        match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(failed(step, &error)),
            Err(_) => Err(format!("{step}: no answer within {CALL_TIMEOUT:?}")),
        }
    }
}
