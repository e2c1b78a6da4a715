//! What Linux's `/proc` says about a process (resident memory now and at
//! its peak, CPU time, children, command line), read with the `procfs`
//! crate.

use procfs::process::{ProcState, Process};

/// A process's resource use at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident memory (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time, clock ticks (`USER_HZ`).
    pub cpu_ticks: u64,
}

impl Usage {
    /// CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.cpu_ticks as f64 / procfs::ticks_per_second() as f64
    }
}

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// The resource use of process `pid`, if it is alive and readable.
pub fn usage(pid: u32) -> Option<Usage> {
    let process = process(pid)?;
    let status = process.status().ok()?;
    let stat = process.stat().ok()?;
    Some(Usage { rss_kib: status.vmrss?, peak_rss_kib: status.vmhwm?, cpu_ticks: stat.utime + stat.stime })
}

/// Whether process `pid` exists and has not exited (a zombie has).
pub fn is_running(pid: u32) -> bool {
    let state = process(pid).and_then(|process| process.stat().ok()?.state().ok());
    state.is_some_and(|state| !matches!(state, ProcState::Zombie | ProcState::Dead))
}

/// The children of process `pid`, from every thread's `children` list.
pub fn children(pid: u32) -> Vec<u32> {
    let Some(tasks) = process(pid).and_then(|process| process.tasks().ok()) else { return Vec::new() };
    let mut children: Vec<u32> = tasks.flatten().filter_map(|task| task.children().ok()).flatten().collect();
    children.sort_unstable();
    children.dedup();
    children
}

/// The command line of process `pid`, one argument each.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    process(pid)?.cmdline().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_visible_to_itself() {
        let me = std::process::id();
        let usage = usage(me).unwrap();
        assert!(usage.rss_kib > 0 && usage.peak_rss_kib >= usage.rss_kib, "{usage:?}");
        assert!(usage.cpu_s() > 0.0, "{usage:?}");
        assert!(is_running(me));
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(!is_running(u32::MAX));
        assert_eq!(super::usage(u32::MAX), None);
        let child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(children(me).contains(&child.id()));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
        // A child that exited and was not yet reaped is no longer running.
        let exited = std::process::Command::new("true").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!is_running(exited.id()));
        drop(exited);
    }
}
