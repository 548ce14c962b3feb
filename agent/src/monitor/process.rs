//! Server-process and machine sampling: finds the watched processes (by name pattern, as pgrep
//! would, or the one listening on the target's port) and their children each tick, and reads CPU %,
//! RSS, VSZ, threads and open files; figures it cannot read are None, with the reason said once.

use super::MonitorError;
use super::machine::{self, PressureReader};
use std::collections::{BTreeMap, HashMap, HashSet};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
use tokengun_common::sources;
use tokengun_common::{ProcessReading, ProcessRole};

/// Samples watched processes and the machine; keeps one `System` alive between ticks.
pub struct ProcessSampler {
    sys: System,
    watch: Vec<sources::Watch>,
    /// pid -> (accumulated CPU ms, t_ns) at the last tick.
    prev_cpu: HashMap<u32, (u64, u64)>,
    /// Watched pids of the last tick (to say when one appears or goes).
    known: BTreeMap<u32, String>,
    said: HashSet<String>,
    first_tick: bool,
    /// Each watched process's energy counter (macOS).
    energy: tokengun_common::monitor::apple::ProcessEnergy,
    pressure: PressureReader,
}

/// The machine's figures at one instant.
fn machine(sys: &mut System, t_ns: u64) -> ProcessReading {
    sys.refresh_cpu_usage();
    sys.refresh_memory();
    let load = System::load_average().ok().map(|l| l.one);
    ProcessReading {
        t_ns,
        role: ProcessRole::Machine,
        pid: None,
        name: gethostname::gethostname().to_string_lossy().into_owned(),
        cpu_pct: Some(f64::from(sys.global_cpu_usage())),
        rss_bytes: Some(sys.used_memory()),
        vsz_bytes: None,
        threads: None,
        open_fds: None,
        mem_total_bytes: Some(sys.total_memory()),
        load_avg_1m: load,
        cpu_count: u32::try_from(sys.cpus().len()).ok().filter(|n| *n > 0),
        energy_j: None,
        power_w: None,
        pressure: Default::default(),
    }
}

impl ProcessSampler {
    /// A sampler for `watch` (may be empty: the machine alone).
    pub fn new(watch: Vec<sources::Watch>) -> Result<Self, MonitorError> {
        let mut sys =
            System::new().map_err(|e| MonitorError::device("cannot read processes", e))?;
        // Names now, for describe(); the first sample refreshes the rest.
        sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        // The machine's CPU % is a difference between refreshes: the first one only primes it.
        sys.refresh_cpu_usage();
        Ok(Self {
            sys,
            watch,
            prev_cpu: HashMap::new(),
            known: BTreeMap::new(),
            said: HashSet::new(),
            first_tick: true,
            energy: Default::default(),
            pressure: PressureReader::default(),
        })
    }

    /// What is being watched, for the start-up summary: a pid with its process name.
    pub fn describe(&self) -> Vec<String> {
        self.watch
            .iter()
            .map(|w| match w {
                sources::Watch::Pid(pid) => match self.sys.process(Pid::from_u32(*pid)) {
                    Some(p) => format!("{} (pid {pid})", p.name().to_string_lossy()),
                    None => w.describe(),
                },
                sources::Watch::Pattern(_) => w.describe(),
            })
            .collect()
    }

    fn note(&mut self, notes: &mut Vec<String>, text: String) {
        if self.said.insert(text.clone()) {
            notes.push(text);
        }
    }

    /// Watched pids with their role and name: matches, then every descendant of a match.
    fn find(&self) -> BTreeMap<u32, (ProcessRole, String)> {
        let procs = self.sys.processes();
        let name_of = |p: &sysinfo::Process| p.name().to_string_lossy().into_owned();
        let matches = |pid: Pid, p: &sysinfo::Process| {
            self.watch.iter().any(|w| match w {
                sources::Watch::Pid(want) => pid.as_u32() == *want,
                sources::Watch::Pattern(re) => {
                    re.is_match(&name_of(p))
                        || p.exe()
                            .and_then(|e| e.file_name())
                            .is_some_and(|f| re.is_match(&f.to_string_lossy()))
                }
            })
        };
        let roots: HashSet<u32> = procs
            .iter()
            .filter(|(_, p)| p.thread_kind().is_none())
            .filter(|(pid, p)| matches(**pid, p))
            .map(|(pid, _)| pid.as_u32())
            .collect();
        let mut out = BTreeMap::new();
        for (pid, p) in procs.iter().filter(|(_, p)| p.thread_kind().is_none()) {
            // Walk up: a watched ancestor makes this a runner; being watched itself, a server.
            let mut up = p.parent();
            let mut depth = 0;
            let mut under_watched = false;
            while let Some(pp) = up {
                if roots.contains(&pp.as_u32()) {
                    under_watched = true;
                    break;
                }
                depth += 1;
                if depth > 64 {
                    break;
                }
                up = procs.get(&pp).and_then(sysinfo::Process::parent);
            }
            let role = if under_watched {
                ProcessRole::Runner
            } else if roots.contains(&pid.as_u32()) {
                ProcessRole::Server
            } else {
                continue;
            };
            out.insert(pid.as_u32(), (role, name_of(p)));
        }
        out
    }

    /// One tick: the machine row, then one row per watched process.
    pub fn sample(&mut self, t_ns: u64, notes: &mut Vec<String>) -> Vec<ProcessReading> {
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_exe(UpdateKind::OnlyIfNotSet)
                .without_tasks(),
        );
        let mut m = machine(&mut self.sys, t_ns);
        m.pressure = self.pressure.read();
        let mut out = vec![m];
        let found = self.find();
        if found.is_empty() && !self.watch.is_empty() {
            let what = self.describe().join(", ");
            self.note(notes, format!("no process found for {what} yet"));
        }
        for (pid, (role, name)) in &found {
            if !self.known.contains_key(pid) && !self.first_tick {
                notes.push(format!("{} {name} (pid {pid}) appeared", role.as_str()));
            }
        }
        for (pid, name) in &self.known {
            if !found.contains_key(pid) {
                notes.push(format!("{name} (pid {pid}) exited"));
            }
        }
        self.first_tick = false;
        self.known = found.iter().map(|(p, (_, n))| (*p, n.clone())).collect();
        self.prev_cpu.retain(|p, _| found.contains_key(p));
        self.energy.retain(|p| found.contains_key(&p));
        for (pid, (role, name)) in found {
            let Some(p) = self.sys.process(Pid::from_u32(pid)) else {
                continue;
            };
            let cpu_ms = p.accumulated_cpu_time();
            let cpu_pct = self
                .prev_cpu
                .insert(pid, (cpu_ms, t_ns))
                .filter(|&(_, t0)| t_ns > t0)
                .map(|(c0, t0)| {
                    cpu_ms.saturating_sub(c0) as f64 / ((t_ns - t0) as f64 / 1e6) * 100.0
                });
            let (threads, fds) = (os::threads(pid), os::open_fds(pid, p));
            let (rss, vsz) = (p.memory(), p.virtual_memory());
            let energy = match machine::energy_nj(pid) {
                Some(Ok(nj)) => self.energy.update(pid, t_ns, nj),
                Some(Err(why)) => {
                    self.note(notes, format!("energy of {name} (pid {pid}): {why}"));
                    Default::default()
                }
                None => Default::default(),
            };
            let threads = threads
                .map_err(|why| self.note(notes, format!("threads of {name} (pid {pid}): {why}")))
                .ok();
            let open_fds = fds
                .map_err(|why| self.note(notes, format!("open files of {name} (pid {pid}): {why}")))
                .ok();
            out.push(ProcessReading {
                t_ns,
                role,
                pid: Some(pid),
                name,
                cpu_pct,
                rss_bytes: Some(rss),
                vsz_bytes: Some(vsz),
                threads,
                open_fds,
                mem_total_bytes: None,
                load_avg_1m: None,
                cpu_count: None,
                energy_j: energy.energy_j,
                power_w: energy.power_w,
                pressure: Default::default(),
            });
        }
        out
    }
}

#[cfg(target_os = "linux")]
mod os {
    use super::MonitorError;
    use std::io::ErrorKind;

    /// Field 20 of /proc/PID/stat (after the parenthesised name, which may hold spaces).
    pub fn threads(pid: u32) -> Result<u64, MonitorError> {
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(MonitorError::Os)?;
        let after = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or(MonitorError::Parse("/proc stat"))?;
        // After ")": state(3) ppid(4) ... num_threads is field 20 => index 17 here.
        after
            .split_whitespace()
            .nth(17)
            .and_then(|f| f.parse().ok())
            .ok_or(MonitorError::Parse("/proc stat"))
    }

    pub fn open_fds(pid: u32, _p: &sysinfo::Process) -> Result<u64, MonitorError> {
        match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(rd) => Ok(rd.count() as u64),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(MonitorError::unavailable(
                "unavailable: /proc/PID/fd is readable only by the process's user or root; run the agent as that user or root",
            )),
            Err(e) => Err(MonitorError::Os(e)),
        }
    }
}

#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
mod os {
    use super::MonitorError;

    /// `proc_pidinfo(PROC_PIDTASKINFO)` -> `pti_threadnum`; the one unsafe call of the agent.
    pub fn threads(pid: u32) -> Result<u64, MonitorError> {
        let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
        let pid = libc::c_int::try_from(pid)
            .map_err(|_| MonitorError::unavailable("pid out of range"))?;
        // SAFETY: `info` is a properly sized, writable proc_taskinfo; the kernel writes at most
        // `size` bytes into it and returns how many it wrote.
        let n = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDTASKINFO,
                0,
                (&mut info as *mut libc::proc_taskinfo).cast(),
                size,
            )
        };
        if n == size {
            Ok(u64::try_from(info.pti_threadnum).unwrap_or(0))
        } else {
            Err(MonitorError::unavailable(
                "unavailable: proc_pidinfo refused (another user's process: run the agent as root)",
            ))
        }
    }

    pub fn open_fds(_pid: u32, p: &sysinfo::Process) -> Result<u64, MonitorError> {
        p.open_files().map(|n| n as u64).ok_or_else(|| {
            MonitorError::unavailable("unavailable: another user's process (run the agent as root)")
        })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod os {
    use super::MonitorError;

    pub fn threads(_pid: u32) -> Result<u64, MonitorError> {
        Err(MonitorError::unavailable("not read on this platform"))
    }
    pub fn open_fds(_pid: u32, p: &sysinfo::Process) -> Result<u64, MonitorError> {
        p.open_files()
            .map(|n| n as u64)
            .ok_or_else(|| MonitorError::unavailable("unavailable"))
    }
}

/// The pids listening on TCP `port` (Linux: /proc/net/tcp{,6} and socket inodes; macOS: lsof).
/// Empty when they cannot be seen (another user's process without root).
pub fn listeners(port: u16) -> Vec<u32> {
    listen::pids(port)
}

/// Whether anything listens on TCP `port` at all (Linux: the world-readable socket tables;
/// None where that cannot be told).
pub fn anything_listens(port: u16) -> Option<bool> {
    listen::any(port)
}

#[cfg(target_os = "linux")]
mod listen {
    use std::collections::HashSet;

    /// Inodes of sockets listening on `port`, from the /proc/net/tcp table text.
    pub fn inodes(table: &str, port: u16) -> HashSet<u64> {
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local = f.get(1)?;
                let (_, port_hex) = local.rsplit_once(':')?;
                let listening = *f.get(3)? == "0A";
                (listening && u16::from_str_radix(port_hex, 16).ok()? == port)
                    .then(|| f.get(9)?.parse().ok())
                    .flatten()
            })
            .collect()
    }

    fn listening_inodes(port: u16) -> HashSet<u64> {
        let mut want = HashSet::new();
        for t in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(s) = std::fs::read_to_string(t) {
                want.extend(inodes(&s, port));
            }
        }
        want
    }

    pub fn any(port: u16) -> Option<bool> {
        Some(!listening_inodes(port).is_empty())
    }

    pub fn pids(port: u16) -> Vec<u32> {
        let want = listening_inodes(port);
        if want.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return out;
        };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            let owns = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).ok().is_some_and(|l| {
                    l.to_str()
                        .and_then(|s| s.strip_prefix("socket:["))
                        .and_then(|s| s.strip_suffix(']'))
                        .and_then(|s| s.parse().ok())
                        .is_some_and(|i: u64| want.contains(&i))
                })
            });
            if owns {
                out.push(pid);
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn parses_the_tcp_table() {
            let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   997        0 31337 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:2CAA 0100007F:D431 01 00000000:00000000 00:00000000 00000000   997        0 4242 1 0000000000000000 20 4 30 10 -1\n";
            let got = super::inodes(t, 11434);
            assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![31337]);
        }
    }
}

#[cfg(target_os = "macos")]
mod listen {
    pub fn any(_port: u16) -> Option<bool> {
        None
    }

    pub fn pids(port: u16) -> Vec<u32> {
        let out = std::process::Command::new("lsof")
            .args(["-nP", &format!("-iTCP:{port}"), "-sTCP:LISTEN", "-t"])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod listen {
    pub fn any(_port: u16) -> Option<bool> {
        None
    }

    pub fn pids(_port: u16) -> Vec<u32> {
        Vec::new()
    }
}
