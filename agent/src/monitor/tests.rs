//! The process sampler on a real child process whose threads, memory, open files and CPU the
//! test changes, and the monitor's source probe on this machine (moved here from agent/tests so
//! the monitor stays the agent's own).

use super::process::ProcessSampler;
use super::{MonitorSpec, POWER_SOURCES, detect_power, power_line, probe};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use tokengun_common::sources::{SOURCE_PROCESS, Watch};
use tokengun_common::{ProcessReading, ProcessRole};

/// A Python child that does what it is told and says "ok" after each command.
const CHILD: &str = r#"
import sys, threading, time, subprocess
keep = []
stop = threading.Event()
print("ok", flush=True)
for line in sys.stdin:
    cmd, n = line.split()
    n = int(n)
    if cmd == "threads":
        for _ in range(n):
            t = threading.Thread(target=stop.wait); t.start(); keep.append(t)
    elif cmd == "files":
        for _ in range(n):
            keep.append(open(sys.executable, "rb"))
    elif cmd == "alloc":
        b = bytearray(n * 1024 * 1024)
        for i in range(0, len(b), 4096): b[i] = 1
        keep.append(b)
    elif cmd == "spin":
        end = time.time() + n / 1000
        while time.time() < end: pass
    elif cmd == "child":
        keep.append(subprocess.Popen(["sleep", str(n)]))
    print("ok", flush=True)
"#;

struct Kid {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Kid {
    fn spawn() -> Option<Self> {
        let mut child = match Command::new("python3")
            .args(["-c", CHILD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("CI").is_err(),
                    "python3 is needed for this test under CI: {e}"
                );
                eprintln!("skipping: python3 not found ({e})");
                return None;
            }
        };
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut kid = Self {
            child,
            stdin,
            stdout,
        };
        // Python is running (a launcher script, e.g. pyenv's, has exec'd into it).
        let mut line = String::new();
        kid.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
        Some(kid)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn tell(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "child answered {line:?} to {cmd}");
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ns() -> u64 {
    crate::clock::mono_ns()
}

fn row(rows: &[ProcessReading], pid: u32) -> ProcessReading {
    rows.iter()
        .find(|r| r.pid == Some(pid))
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not sampled: {rows:?}"))
}

#[test]
fn follows_a_real_process_as_it_changes() {
    let Some(mut kid) = Kid::spawn() else { return };
    let pid = kid.pid();
    let mut s = ProcessSampler::new(vec![Watch::Pid(pid)]).unwrap();
    let mut notes = Vec::new();
    let rows = s.sample(now_ns(), &mut notes);
    // The machine comes first, with what the machine has.
    assert_eq!(rows[0].role, ProcessRole::Machine);
    assert!(rows[0].mem_total_bytes.unwrap() > 0);
    assert!(rows[0].rss_bytes.unwrap() > 0);
    let before = row(&rows, pid);
    assert_eq!(before.role, ProcessRole::Server);
    assert_eq!(before.cpu_pct, None, "no CPU % from a single reading");
    let (t0, f0, r0) = (
        before.threads.unwrap(),
        before.open_fds.unwrap(),
        before.rss_bytes.unwrap(),
    );

    kid.tell("threads 6");
    kid.tell("files 25");
    kid.tell("alloc 96");
    kid.tell("spin 400");
    let after = row(&s.sample(now_ns(), &mut notes), pid);
    assert!(after.threads.unwrap() >= t0 + 6, "{before:?} -> {after:?}");
    assert!(
        after.open_fds.unwrap() >= f0 + 25,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.rss_bytes.unwrap() >= r0 + 80 * 1024 * 1024,
        "{before:?} -> {after:?}"
    );
    assert!(after.vsz_bytes.unwrap() >= after.rss_bytes.unwrap());
    // 400 ms of spinning inside the interval since the first reading.
    let cpu = after.cpu_pct.unwrap();
    assert!(cpu > 10.0 && cpu < 250.0, "cpu {cpu}%");

    // A process the server starts is followed as its runner, and noted when it appears.
    kid.tell("child 30");
    let rows = s.sample(now_ns(), &mut notes);
    let runner = rows
        .iter()
        .find(|r| r.role == ProcessRole::Runner)
        .unwrap_or_else(|| panic!("no runner in {rows:?}"));
    assert_eq!(runner.name, "sleep");
    assert!(notes.iter().any(|n| n.contains("appeared")), "{notes:?}");

    drop(kid);
    let mut notes = Vec::new();
    let rows = s.sample(now_ns(), &mut notes);
    assert!(rows.iter().all(|r| r.pid != Some(pid)));
    assert!(notes.iter().any(|n| n.contains("exited")), "{notes:?}");
}

#[test]
fn a_name_pattern_finds_processes_as_pgrep_would() {
    let Some(kid) = Kid::spawn() else { return };
    let mut s = ProcessSampler::new(vec![Watch::parse("python").unwrap()]).unwrap();
    let rows = s.sample(now_ns(), &mut Vec::new());
    assert!(
        rows.iter().any(|r| r.pid == Some(kid.pid())),
        "python child not matched: {rows:?}"
    );
    // Nothing matching: said once, not a failure.
    let mut none =
        ProcessSampler::new(vec![Watch::parse("^no-such-server-xyz$").unwrap()]).unwrap();
    let mut notes = Vec::new();
    assert_eq!(none.sample(now_ns(), &mut notes).len(), 1);
    none.sample(now_ns(), &mut notes);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(Watch::parse("pid:x").is_err());
    assert!(Watch::parse("(").is_err());
}

#[test]
fn the_probe_says_what_each_source_found_or_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MonitorSpec {
        watch_process: vec![format!("pid:{}", std::process::id())],
        sys_root: dir.path().to_path_buf(),
        ..MonitorSpec::default()
    };
    let (sources, watching) = probe(&spec);
    let names: Vec<&str> = sources.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(
        names,
        [
            "process",
            "ioreport",
            "powermetrics",
            "nvml",
            "amdgpu",
            "rapl"
        ]
    );
    let process = &sources[0];
    assert_eq!(process.source, SOURCE_PROCESS);
    assert!(process.available, "{process:?}");
    assert!(
        watching
            .iter()
            .any(|w| w.contains(&std::process::id().to_string()))
    );
    // An empty sysfs: AMD and RAPL are unavailable, each with its reason.
    for s in &sources[4..] {
        assert!(!s.available && !s.detail.is_empty(), "{s:?}");
    }
    // Off a Mac the Apple sources say which platform they need, and one line sums it up.
    #[cfg(not(target_os = "macos"))]
    {
        assert_eq!(sources[1].detail, "macOS only");
        let line = watching.last().unwrap();
        assert!(
            line.starts_with("no power source (--power auto): ioreport: macOS only; powermetrics: macOS only; nvml: "),
            "{line}"
        );
    }
}

#[test]
fn power_none_tries_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MonitorSpec {
        sys_root: dir.path().to_path_buf(),
        power_choice: tokengun_common::sources::PowerChoice::None,
        ..MonitorSpec::default()
    };
    let (statuses, sources) = detect_power(&spec);
    assert!(sources.is_empty());
    assert_eq!(statuses.len(), POWER_SOURCES.len());
    for s in &statuses {
        assert_eq!(
            (s.available, s.detail.as_str()),
            (false, "not used (--power none)")
        );
    }
    assert_eq!(
        power_line(spec.power_choice, &statuses),
        "power: none (--power none)"
    );
}
