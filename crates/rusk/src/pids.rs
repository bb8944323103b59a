//! Signals to processes named by a pid, checked in one place. A pid that came from elsewhere
//! (a worker's registration, the scheduler's status) must never reach kill(2) unchecked: there
//! 0 means our own process group, -1 (4294967295 as a `u32`) every process we may signal, any
//! other negative value a process group, and 1 is init.

/// The largest pid Linux can hand out (`/proc/sys/kernel/pid_max` is at most 2^22).
pub const PID_MAX_LIMIT: u32 = 1 << 22;

/// Can `pid` name one ordinary process (not init, not a group, not everyone)?
pub fn is_process(pid: u32) -> bool {
    (2..=PID_MAX_LIMIT).contains(&pid)
}

/// Send `sig` to the one process `pid`, after checking it can only mean one process.
pub fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    if !is_process(pid) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refusing to signal pid {pid}: not the id of one process (2..={PID_MAX_LIMIT})"
            ),
        ));
    }
    // SAFETY: kill(2) of one process by a pid checked above.
    if unsafe { libc::kill(pid as i32, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_that_mean_a_group_everyone_or_init_are_refused() {
        for pid in [0, 1, u32::MAX, (i32::MAX as u32) + 1, PID_MAX_LIMIT + 1] {
            let e = signal(pid, 0).expect_err("refused");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{pid}");
        }
        // Our own pid is one process: signal 0 only checks it exists.
        signal(std::process::id(), 0).expect("a real process");
    }
}
