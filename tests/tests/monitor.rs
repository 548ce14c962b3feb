//! Monitoring end to end: a real sweep against the simulator with power read from a sysfs tree
//! the test drives (a RAPL counter that wraps mid-run and an AMD GPU's power), through a real agent;
//! energy per cycle, per token and above the idle baseline, power.csv and processes.csv.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokengun_tests::{Scenario, f, read_csv};

const RAPL_W: f64 = 50.0;
const GPU_W: f64 = 150.0;
const MAX_UJ: u64 = 262_143_328_850;

fn write(root: &Path, rel: &str, v: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    // Write then rename: a reader never sees half a number.
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, format!("{v}\n")).unwrap();
    std::fs::rename(tmp, p).unwrap();
}

/// A fake /sys whose RAPL package counter advances at RAPL_W (starting 60 J before its wrap) and
/// whose amdgpu reports GPU_W, until dropped.
struct FakeSys {
    root: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSys {
    fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "class/powercap/intel-rapl:0/name", "package-0");
        write(
            r,
            "class/powercap/intel-rapl:0/max_energy_range_uj",
            &MAX_UJ.to_string(),
        );
        let hw = "class/drm/card0/device/hwmon/hwmon2";
        write(r, &format!("{hw}/name"), "amdgpu");
        write(
            r,
            &format!("{hw}/power1_average"),
            &((GPU_W * 1e6) as u64).to_string(),
        );
        write(r, &format!("{hw}/freq1_input"), "1800000000");
        write(r, "class/drm/card0/device/gpu_busy_percent", "88");
        let start_uj = MAX_UJ - 60_000_000;
        write(
            r,
            "class/powercap/intel-rapl:0/energy_uj",
            &start_uj.to_string(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (path, flag) = (r.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let uj = start_uj as u128 + (t0.elapsed().as_micros() * RAPL_W as u128);
                let wrapped = (uj % u128::from(MAX_UJ)) as u64;
                write(
                    &path,
                    "class/powercap/intel-rapl:0/energy_uj",
                    &wrapped.to_string(),
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            root,
            stop,
            thread: Some(thread),
        }
    }

    fn path(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }
}

impl Drop for FakeSys {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn close(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: {got} is not within {tolerance} of {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_per_cycle_from_counters_and_power() {
    let sys = FakeSys::start();
    let ran = Scenario::fixed("m:1b", 50, 8, 100, 4)
        .agent(tokengun_agent::AgentConfig {
            sys_root: sys.path(),
            ..tokengun_agent::AgentConfig::default()
        })
        .levels(&[2, 4])
        .config(|c| {
            c.monitor.power_interval = Duration::from_millis(100);
            c.monitor.process_interval = Duration::from_millis(200);
            c.monitor.baseline = Duration::from_secs(1);
        })
        .run()
        .await;
    let dir = ran.run_dir();
    check_sources_and_baseline(&ran.run_json());
    check_cycle_energy(&ran.cycles());
    check_power_csv(dir);
    check_processes_csv(dir);
    ran.stop().await;
}

/// The power sources found (also in the agent's capabilities) and the idle baseline.
fn check_sources_and_baseline(m: &serde_json::Value) {
    let sources = m["monitor"]["sources"].as_array().unwrap();
    let found = |name: &str| {
        sources
            .iter()
            .find(|s| s["source"] == name)
            .unwrap_or_else(|| panic!("{name} not in {sources:?}"))["available"]
            .as_bool()
            .unwrap()
    };
    assert!(found("rapl") && found("amdgpu") && found("process"));
    let caps: Vec<&str> = m["agents"][0]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"power:rapl") && caps.contains(&"power:amdgpu"),
        "power sources listed in the agent's capabilities: {caps:?}"
    );
    assert!(!found("nvml") || cfg!(not(target_os = "linux")) || found("nvml"));
    close(
        m["monitor"]["baseline_power_w"].as_f64().unwrap(),
        RAPL_W + GPU_W,
        8.0,
        "baseline",
    );
}

/// Each cycle's power, energy, per-token and net figures, accelerator means and server memory.
fn check_cycle_energy(cycles: &[HashMap<String, String>]) {
    assert_eq!(cycles.len(), 2);
    for row in cycles {
        let level = &row["level"];
        let mean = f(row, "mean_power_w");
        close(
            mean,
            RAPL_W + GPU_W,
            8.0,
            &format!("level {level} mean power"),
        );
        assert_eq!(row["energy_method"], "mixed", "{row:?}");
        let energy = f(row, "energy_j");
        let tokens = f(row, "output_tokens");
        assert_eq!(tokens, 100.0 * level.parse::<f64>().unwrap());
        close(f(row, "joules_per_token"), energy / tokens, 1e-5, "J/token");
        close(
            f(row, "tokens_per_joule"),
            tokens / energy,
            1e-4,
            "tokens/J",
        );
        // The load does not change the fake power: the net energy is about zero.
        close(f(row, "net_energy_j"), 0.0, 0.05 * energy, "net energy");
        close(f(row, "gpu_busy_pct_mean"), 88.0, 1e-9, "busy");
        close(f(row, "gpu_freq_mhz_mean"), 1800.0, 1e-9, "freq");
        // The window is the cycle on the agent's clock, about its measured duration.
        close(energy / mean, f(row, "duration_s"), 0.25, "energy window");
        assert!(f(row, "server_rss_peak_bytes") > 0.0, "{row:?}");
    }
}

/// power.csv: rows for the baseline and each level, and a RAPL counter that never goes back.
fn check_power_csv(dir: &Path) {
    let power = read_csv(&dir.join("power.csv"));
    let labels: std::collections::BTreeSet<&str> =
        power.iter().map(|r| r["cycle"].as_str()).collect();
    for l in ["baseline", "2", "4"] {
        assert!(labels.contains(l), "no {l:?} rows in power.csv: {labels:?}");
    }
    // The RAPL counter wrapped during the run; the energy column never goes backwards.
    let counter: Vec<f64> = power
        .iter()
        .filter(|r| r["source"] == "rapl" && r["metric"] == "energy_j")
        .map(|r| f(r, "value"))
        .collect();
    assert!(counter.len() > 10);
    assert!(counter.windows(2).all(|w| w[1] >= w[0]), "{counter:?}");
    assert!(
        *counter.last().unwrap() > 60.0,
        "the run outlasted the wrap"
    );
    assert!(power.iter().all(|r| f(r, "elapsed_s") >= 0.0));
}

/// processes.csv: the machine, and the simulator's process (this one) as the server.
fn check_processes_csv(dir: &Path) {
    let procs = read_csv(&dir.join("processes.csv"));
    assert!(procs.iter().any(|r| r["role"] == "machine"));
    // The machine's pressure figures come through the agent's gRPC stream into their columns:
    // swap in use (from /proc/meminfo) on every Linux machine; PSI where the kernel has it.
    #[cfg(target_os = "linux")]
    {
        let machine: Vec<_> = procs.iter().filter(|r| r["role"] == "machine").collect();
        assert!(
            machine
                .iter()
                .all(|r| r["swap_used_bytes"].parse::<u64>().is_ok()),
            "{machine:?}"
        );
        if std::path::Path::new("/proc/pressure/memory").exists() {
            assert!(
                machine
                    .iter()
                    .all(|r| r["mem_pressure"].parse::<u8>().is_ok())
            );
        }
    }
    let server: Vec<_> = procs.iter().filter(|r| r["role"] == "server").collect();
    assert!(!server.is_empty(), "the simulator's process is watched");
    assert!(
        server
            .iter()
            .all(|r| r["pid"] == std::process::id().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_power_sources_the_run_goes_on_and_says_why() {
    let empty = tempfile::tempdir().unwrap();
    let ran = Scenario::fixed("m:1b", 5, 1, 10, 4)
        .agent(tokengun_agent::AgentConfig {
            sys_root: empty.path().to_path_buf(),
            ..tokengun_agent::AgentConfig::default()
        })
        .levels(&[2])
        .run()
        .await;
    let m = ran.run_json();
    for s in m["monitor"]["sources"].as_array().unwrap() {
        if s["source"] != "process" && s["source"] != "nvml" {
            assert_eq!(s["available"], false, "{s}");
            assert!(!s["detail"].as_str().unwrap().is_empty(), "{s}");
        }
    }
    assert!(m["monitor"]["baseline_power_w"].is_null());
    assert!(!ran.run_dir().join("power.csv").exists());
    let row = &ran.cycles()[0];
    assert_eq!(row["energy_j"], "", "no figure rather than a zero");
    assert_eq!(row["tokens_per_joule"], "");
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_none_from_the_controller_reaches_the_agent() {
    // Fake RAPL and AMD power are there, and --power none (sent in the monitor spec) leaves
    // them unread: no power.csv, every power source "not used", and the run says so in one line.
    let sys = FakeSys::start();
    let ran = Scenario::fixed("m:1b", 5, 1, 10, 4)
        .agent(tokengun_agent::AgentConfig {
            sys_root: sys.path(),
            ..tokengun_agent::AgentConfig::default()
        })
        .levels(&[2])
        .config(|c| c.monitor.power = Some(tokengun_common::sources::PowerChoice::None))
        .run()
        .await;
    let m = ran.run_json();
    for s in m["monitor"]["sources"].as_array().unwrap() {
        if s["source"] != "process" {
            assert_eq!(s["available"], false, "{s}");
            assert_eq!(s["detail"], "not used (--power none)", "{s}");
        }
    }
    assert!(!ran.run_dir().join("power.csv").exists());
    let notes = m["notes"].to_string();
    assert!(notes.contains("power: none (--power none)"), "{notes}");
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_watch_pattern_is_refused_before_any_load() {
    let refused = Scenario::fixed("m:1b", 5, 1, 10, 4)
        .levels(&[2])
        .config(|c| {
            c.monitor.watch_process = vec!["(unclosed".into()];
            c.run_id = Some("refused".into());
        })
        .run_err()
        .await;
    let e = &refused.error;
    assert!(e.contains("not a valid pattern"), "{e}");
    assert!(
        !refused.out_dir().join("refused").exists(),
        "refused before the run folder was made"
    );
    refused.stop().await;
}
