//! What the bench reads from and asks of Linux: a process's RSS and CPU
//! time from /proc, the open-files limit, and `IP_BIND_ADDRESS_NO_PORT`.
//!
//! The two syscalls are declared by hand rather than through a crate:
//! neither tokio nor socket2 0.6 exposes `IP_BIND_ADDRESS_NO_PORT` or
//! `setrlimit`, std links the C library anyway, and the constants below are
//! the Linux ABI values for x86_64 and aarch64 (other targets get an error).

use std::time::Duration;

/// Kernel clock ticks per second for /proc/PID/stat times. This is
/// `sysconf(_SC_CLK_TCK)`, which is USER_HZ = 100 on every Linux ABI we run
/// on; it is taken as 100 rather than asked for.
pub const CLK_TCK: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident set size (VmRSS), in KiB.
    pub rss_kib: u64,
    /// utime + stime, in seconds.
    pub cpu_secs: f64,
    /// stime alone: time in the kernel on the process's behalf (syscalls).
    pub sys_secs: f64,
}

pub fn sample(pid: u32) -> Result<Sample, String> {
    let (user, sys) = cpu_secs(pid)?;
    Ok(Sample {
        rss_kib: rss_kib(pid)?,
        cpu_secs: user + sys,
        sys_secs: sys,
    })
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS line"))
}

/// `(utime, stime)` in seconds.
fn cpu_secs(pid: u32) -> Result<(f64, f64), String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its closing parenthesis start at field 3 (state), so
    // utime (field 14) and stime (field 15) are the 12th and 13th there.
    let rest = stat
        .rfind(')')
        .map(|at| &stat[at + 1..])
        .ok_or_else(|| format!("{path}: unexpected format"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut ticks = || -> Result<u64, String> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: no utime/stime"))
    };
    let (utime, stime) = (ticks()?, ticks()?);
    Ok((utime as f64 / CLK_TCK, stime as f64 / CLK_TCK))
}

/// CPU seconds `pid` spent between two samples over a wall-clock span, as
/// a share of one core.
pub fn utilisation(before: Sample, after: Sample, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 {
        (after.cpu_secs - before.cpu_secs) / secs
    } else {
        0.0
    }
}

/// Per-core jiffies from /proc/stat: `(busy, total)` for each `cpuN`.
/// Busy counts user, nice, system, irq, softirq and steal time, so it also
/// shows kernel work no process is charged for (loopback TCP delivery in
/// softirq context) and load from other processes on the same core.
pub fn cores() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let ticks: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = ticks.iter().take(8).sum();
            // The 4th and 5th fields are idle and iowait.
            let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            (total - idle.min(total), total)
        })
        .collect()
}

/// Share of each core that was busy between two [`cores`] readings.
pub fn cores_busy(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(&(b_busy, b_total), &(a_busy, a_total))| {
            let total = a_total.saturating_sub(b_total);
            if total == 0 {
                return 0.0;
            }
            let share = a_busy.saturating_sub(b_busy) as f64 / total as f64;
            (share * 1000.0).round() / 1000.0
        })
        .collect()
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod ffi {
    use std::ffi::{c_int, c_void};

    pub const RLIMIT_NOFILE: c_int = 7;
    pub const IPPROTO_IP: c_int = 0;
    pub const IP_BIND_ADDRESS_NO_PORT: c_int = 24;

    /// `struct rlimit` with 64-bit `rlim_t`.
    #[repr(C)]
    pub struct RLimit {
        pub cur: u64,
        pub max: u64,
    }

    unsafe extern "C" {
        pub fn getrlimit(resource: c_int, rlim: *mut RLimit) -> c_int;
        pub fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
        pub fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
    }
}

/// Raises the soft open-files limit to the hard one; returns the soft limit
/// now in force.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn raise_nofile_limit() -> Result<u64, String> {
    let mut limit = ffi::RLimit { cur: 0, max: 0 };
    // SAFETY: `limit` is a valid, writable `struct rlimit`.
    if unsafe { ffi::getrlimit(ffi::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if limit.cur < limit.max {
        let raised = ffi::RLimit {
            cur: limit.max,
            max: limit.max,
        };
        // SAFETY: `raised` is a valid `struct rlimit` that outlives the call.
        if unsafe { ffi::setrlimit(ffi::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
        return Ok(limit.max);
    }
    Ok(limit.cur)
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub fn raise_nofile_limit() -> Result<u64, String> {
    Err("not supported on this platform; raise `ulimit -n` by hand".into())
}

/// Lets `bind` to a source address defer the port choice to `connect`, so
/// the 4-tuple (not the source address alone) must be unique: many source
/// addresses then each reach the full ephemeral port range.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn bind_address_no_port(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let on: std::ffi::c_int = 1;
    // SAFETY: the fd is an open socket owned by the caller for the whole
    // call; the option value points at a live c_int of the length given.
    let rc = unsafe {
        ffi::setsockopt(
            socket.as_raw_fd(),
            ffi::IPPROTO_IP,
            ffi::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub fn bind_address_no_port<T>(_socket: &T) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "IP_BIND_ADDRESS_NO_PORT is Linux-only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("read /proc/self");
        assert!(s.rss_kib > 0);
        assert!(s.cpu_secs >= 0.0);
    }
}
