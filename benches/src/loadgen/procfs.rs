//! What Linux's `/proc` says about a process: resident memory (now and
//! peak), CPU time, children and command line. Read as text, no unsafe code.

use std::path::Path;

/// `/proc/<pid>/stat` counts CPU time in clock ticks of `USER_HZ`, which
/// Linux fixes at 100 on every architecture it exposes to user space.
pub const CLOCK_TICKS_PER_S: u64 = 100;

/// A process's resource use at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident memory (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time, clock ticks.
    pub cpu_ticks: u64,
}

impl Usage {
    /// CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.cpu_ticks as f64 / CLOCK_TICKS_PER_S as f64
    }
}

/// The resource use of process `pid`, if it is alive and readable.
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (rss_kib, peak_rss_kib) = parse_status(&status);
    Some(Usage { rss_kib: rss_kib?, peak_rss_kib: peak_rss_kib?, cpu_ticks: parse_cpu_ticks(&stat)? })
}

/// `(VmRSS, VmHWM)` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after
/// its last `)`: state is field 3, utime 14, stime 15.
pub fn parse_cpu_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The state letter of process `pid` (`R`, `S`, `Z`, ...), if it exists.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

/// Whether process `pid` exists and has not exited (a zombie has).
pub fn is_running(pid: u32) -> bool {
    state(pid).is_some_and(|state| state != 'Z' && state != 'X')
}

/// The children of process `pid`, from every thread's `children` list.
pub fn children(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let Ok(entries) = std::fs::read_dir(&tasks) else { return children };
    for entry in entries.flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("children")) {
            children.extend(text.split_whitespace().filter_map(|child| child.parse::<u32>().ok()));
        }
    }
    children.sort_unstable();
    children.dedup();
    children
}

/// The command line of process `pid`, one argument each.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|&byte| byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat_fields_are_read_where_linux_puts_them() {
        let status = "Name:\tcoffer\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\nThreads:\t9\n";
        assert_eq!(parse_status(status), (Some(100_000), Some(123_456)));
        assert_eq!(parse_status("Name: x\n"), (None, None));
        let stat = "4242 (coffer (node) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_visible_to_itself() {
        let me = std::process::id();
        let usage = usage(me).unwrap();
        assert!(usage.rss_kib > 0 && usage.peak_rss_kib >= usage.rss_kib, "{usage:?}");
        assert!(is_running(me));
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(!is_running(u32::MAX));
        let child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(children(me).contains(&child.id()));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
