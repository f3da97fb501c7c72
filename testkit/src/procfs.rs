//! CPU time and memory of processes and of the machine, from /proc.

/// utime + stime from the text of a `/proc/.../stat` file, in clock ticks; 0 if
/// it cannot be read.
pub fn stat_ticks(stat: &str) -> u64 {
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields
        .get(11..13)
        .map_or(0, |f| f.iter().map(|v| v.parse::<u64>().unwrap_or(0)).sum())
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

/// CPU ticks used so far by switchd's datapath threads (named `datapath-N`) alone:
/// unlike the whole process, they do not pay for link events that tests running
/// in parallel cause in the root namespace.
pub fn datapath_ticks(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| stat.contains("(datapath-"))
        .map(|stat| stat_ticks(&stat))
        .sum()
}

/// Resident memory of a process in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds; 0 once it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_ticks(&stat) as f64 / switchd::sys::clock_ticks_per_sec() as f64
}

/// Busy and total jiffies of the whole machine, from /proc/stat.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
