//! Process and thread controls: signals, CPU masks, the clock tick. switchd's
//! tests and benches use them too, so that they need no `unsafe` of their own.

use super::cvt;
use std::io;

/// Sends `signal` to process `pid`, or to process group `-pid` when negative.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    cvt(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Clock ticks per second, the unit of /proc's CPU times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// A set of CPUs a thread may run on.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// Just `cpu`.
    pub fn single(cpu: usize) -> CpuSet {
        // SAFETY: cpu_set_t is plain old data and all-zero is the empty set;
        // CPU_SET writes inside it and ignores a cpu beyond its size.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            set
        };
        CpuSet(set)
    }

    /// The calling thread's mask.
    pub fn of_this_thread() -> io::Result<CpuSet> {
        // SAFETY: cpu_set_t is plain old data; all-zero is a valid value.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most the size we pass into `set`.
        cvt(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) })?;
        Ok(CpuSet(set))
    }

    /// Restricts the calling thread (and what it starts later) to this set.
    pub fn apply_to_this_thread(&self) -> io::Result<()> {
        // SAFETY: the kernel reads exactly the size we pass from `self.0`.
        cvt(unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) })?;
        Ok(())
    }
}
