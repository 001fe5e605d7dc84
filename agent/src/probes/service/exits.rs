//! Seeing a watched process exit between samples, cheaply.
//!
//! The last sample's matching pids (at most [`MAX_WATCHED`], lowest first) are watched:
//!
//! - Linux: a pidfd per pid (`pidfd_open`, kernel ≥ 5.3), readable the moment the process
//!   exits, registered with the tokio reactor: no polling, no CPU. Where `pidfd_open` is
//!   refused (old kernel, seccomp), that pid is checked every [`POLL_EVERY`] by reading
//!   `/proc/<pid>/stat` (gone, a zombie, or a different start time = exited).
//! - Elsewhere: every [`POLL_EVERY`], sysinfo refreshes only the watched pids.
//!
//! State lives in [`ExitWatch`], so dropping [`ExitWatch::exited`] loses nothing. A pid
//! is re-resolved only at the next sample: between the scan and `pidfd_open` a pid could
//! be recycled by another process; the next sample then corrects the watch.

use std::time::Duration;

/// At most this many pids are watched (a cmdline regex may match hundreds of workers).
pub(super) const MAX_WATCHED: usize = 64;

/// How often a watched pid is checked where it cannot be waited on.
#[cfg(target_os = "linux")]
const POLL_EVERY: Duration = Duration::from_millis(250);
#[cfg(not(target_os = "linux"))]
const POLL_EVERY: Duration = Duration::from_millis(500);

pub(super) use imp::ExitWatch;

#[cfg(target_os = "linux")]
mod imp {
    use std::future::{pending, poll_fn};
    use std::task::Poll;

    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    use tokio::net::unix::pipe;

    use super::{MAX_WATCHED, POLL_EVERY};

    /// One watched process.
    struct Watched {
        pid: u32,
        how: How,
    }

    enum How {
        /// Readable once the process has exited. Registered with the reactor through
        /// `pipe::Receiver`: since tokio 1.54 (#8587) `AsyncFd` can only be built with
        /// `unsafe`, which this crate forbids, while `from_owned_fd_unchecked` is safe
        /// (it owns the fd) and needs nothing of a pipe but pollability as long as it
        /// is only waited on, never read.
        Pidfd(pipe::Receiver),
        /// Checked every [`POLL_EVERY`]; `start_ticks` tells a recycled pid apart.
        Poll { start_ticks: u64 },
        /// Already gone when the watch was set up.
        Gone,
    }

    pub(in super::super) struct ExitWatch {
        watched: Vec<Watched>,
        use_pidfd: bool,
    }

    impl ExitWatch {
        pub(in super::super) fn new() -> Self {
            Self { watched: Vec::new(), use_pidfd: true }
        }

        #[cfg(test)]
        pub(in super::super) fn polling_only() -> Self {
            Self { watched: Vec::new(), use_pidfd: false }
        }

        /// Makes `found` (pid, start time) — sorted by pid — the watched set; keeps the
        /// watches of pids already watched.
        pub(in super::super) fn watch(&mut self, found: &[(u32, u64)]) {
            let mut previous = std::mem::take(&mut self.watched);
            for &(pid, _) in found.iter().take(MAX_WATCHED) {
                let kept = previous.iter().position(|watched| watched.pid == pid);
                let watched = match kept {
                    Some(index) => previous.swap_remove(index),
                    None => Watched { pid, how: self.open(pid) },
                };
                self.watched.push(watched);
            }
        }

        fn open(&self, pid: u32) -> How {
            if self.use_pidfd
                && let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw)
            {
                match pidfd_open(raw, PidfdFlags::NONBLOCK) {
                    Ok(fd) => match pipe::Receiver::from_owned_fd_unchecked(fd) {
                        Ok(fd) => return How::Pidfd(fd),
                        Err(error) => tracing::debug!(pid, %error, "cannot register a pidfd; polling"),
                    },
                    Err(rustix::io::Errno::SRCH) => return How::Gone,
                    Err(error) => tracing::debug!(pid, %error, "pidfd_open refused; polling"),
                }
            }
            match start_ticks(pid) {
                Some(start_ticks) => How::Poll { start_ticks },
                None => How::Gone,
            }
        }

        /// Resolves when a watched process has exited (and stops watching it); never
        /// when nothing is watched.
        pub(in super::super) async fn exited(&mut self) {
            if let Some(index) = self.watched.iter().position(|watched| matches!(watched.how, How::Gone)) {
                self.watched.swap_remove(index);
                return;
            }
            if self.watched.is_empty() {
                return pending().await;
            }
            let polling = self.watched.iter().any(|watched| matches!(watched.how, How::Poll { .. }));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + POLL_EVERY, POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let watched = &self.watched;
                let fired = poll_fn(|context| {
                    for (index, one) in watched.iter().enumerate() {
                        // Ready (or an error on the fd): the process is gone.
                        if let How::Pidfd(fd) = &one.how
                            && fd.poll_read_ready(context).is_ready()
                        {
                            return Poll::Ready(Some(index));
                        }
                    }
                    if polling && tick.poll_tick(context).is_ready() {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await;
                match fired {
                    Some(index) => {
                        let gone = self.watched.swap_remove(index);
                        tracing::debug!(pid = gone.pid, "watched process exited");
                        return;
                    }
                    None => {
                        let before = self.watched.len();
                        self.watched.retain(|one| match one.how {
                            How::Poll { start_ticks: ticks } => start_ticks(one.pid) == Some(ticks),
                            How::Pidfd(_) | How::Gone => true,
                        });
                        if self.watched.len() != before {
                            tracing::debug!("watched process exited");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The start time (clock ticks after boot) of a live, non-zombie process.
    fn start_ticks(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid …": comm may hold spaces and parentheses; the fields
        // after the last ')' start with state (field 3); starttime is field 22.
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let mut fields = after_comm.split_whitespace();
        let state = fields.next()?;
        if matches!(state, "Z" | "X" | "x") {
            return None;
        }
        fields.nth(22 - 4)?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn start_ticks_of_self_and_of_nothing() {
            let own = super::start_ticks(std::process::id());
            assert!(own.is_some());
            assert_eq!(super::start_ticks(std::process::id()), own, "stable");
            assert_eq!(super::start_ticks(u32::MAX / 2), None);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::future::pending;

    use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

    use super::{MAX_WATCHED, POLL_EVERY};

    pub(in super::super) struct ExitWatch {
        /// (pid, start time in unix seconds).
        watched: Vec<(u32, u64)>,
    }

    impl ExitWatch {
        pub(in super::super) fn new() -> Self {
            Self { watched: Vec::new() }
        }

        pub(in super::super) fn watch(&mut self, found: &[(u32, u64)]) {
            self.watched = found.iter().take(MAX_WATCHED).copied().collect();
        }

        pub(in super::super) async fn exited(&mut self) {
            if self.watched.is_empty() {
                return pending().await;
            }
            loop {
                tokio::time::sleep(POLL_EVERY).await;
                let watched = self.watched.clone();
                let alive =
                    match crate::blocking::spawn("process liveness", move || still_alive(&watched)).await {
                        Ok(alive) => alive,
                        // A panic is the probe's: its unit reports it and starts the probe again.
                        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                        Err(_) => continue,
                    };
                if alive.len() != self.watched.len() {
                    self.watched = alive;
                    return;
                }
            }
        }
    }

    /// The watched processes that still run (refreshing only their pids).
    fn still_alive(watched: &[(u32, u64)]) -> Vec<(u32, u64)> {
        let Ok(mut system) = System::new() else { return watched.to_vec() };
        let pids: Vec<sysinfo::Pid> = watched.iter().map(|(pid, _)| sysinfo::Pid::from_u32(*pid)).collect();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        watched
            .iter()
            .copied()
            .filter(|(pid, started)| {
                system.process(sysinfo::Pid::from_u32(*pid)).is_some_and(|process| {
                    process.start_time() == *started
                        && !matches!(process.status(), ProcessStatus::Zombie | ProcessStatus::Dead)
                })
            })
            .collect()
    }
}
