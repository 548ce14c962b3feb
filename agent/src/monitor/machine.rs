//! The machine's thermal and memory pressure for its `processes.csv` row, and each process's
//! energy counter: Linux from /proc and /sys (PSI, meminfo, thermal zones), macOS from
//! `tokengun-macos` (notify, sysctl, `proc_pid_rusage`). Parsing is `common::monitor::pressure`.

use tokengun_common::monitor::MachinePressure;
#[cfg(target_os = "linux")]
use tokengun_common::monitor::pressure;

/// Reads the machine's pressure figures; keeps what must stay registered between reads.
pub struct PressureReader {
    #[cfg(target_os = "linux")]
    proc_root: std::path::PathBuf,
    #[cfg(target_os = "linux")]
    sys_root: std::path::PathBuf,
    #[cfg(target_os = "macos")]
    thermal: Option<tokengun_macos::system::Thermal>,
}

impl Default for PressureReader {
    fn default() -> Self {
        Self::new("/proc".as_ref(), "/sys".as_ref())
    }
}

impl PressureReader {
    /// A reader of `proc_root` and `sys_root` (Linux; tests point them at a folder of their own).
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    pub fn new(proc_root: &std::path::Path, sys_root: &std::path::Path) -> Self {
        Self {
            #[cfg(target_os = "linux")]
            proc_root: proc_root.to_path_buf(),
            #[cfg(target_os = "linux")]
            sys_root: sys_root.to_path_buf(),
            #[cfg(target_os = "macos")]
            thermal: tokengun_macos::system::Thermal::new(),
        }
    }

    /// The figures now; what cannot be read here is None.
    #[cfg(target_os = "linux")]
    pub fn read(&mut self) -> MachinePressure {
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
        let psi =
            read(self.proc_root.join("pressure/memory")).and_then(|t| pressure::parse_psi(&t));
        let temp_c = std::fs::read_dir(self.sys_root.join("class/thermal"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
            .filter_map(|e| read(e.path().join("temp")))
            .filter_map(|t| pressure::parse_millidegrees(&t))
            .reduce(f64::max);
        MachinePressure {
            mem_pressure: psi.map(|p| p.level()),
            mem_stall_pct: psi.map(|p| p.some_avg10),
            swap_used_bytes: read(self.proc_root.join("meminfo"))
                .and_then(|t| pressure::parse_meminfo_swap(&t)),
            thermal_pressure: None,
            temp_c,
        }
    }

    /// The figures now; what cannot be read here is None.
    #[cfg(target_os = "macos")]
    pub fn read(&mut self) -> MachinePressure {
        use tokengun_common::monitor::pressure;
        use tokengun_macos::system;
        MachinePressure {
            mem_pressure: system::memory_pressure_level().and_then(pressure::mem_from_macos),
            mem_stall_pct: None,
            swap_used_bytes: system::swap_used_bytes(),
            thermal_pressure: self
                .thermal
                .as_ref()
                .and_then(system::Thermal::state)
                .and_then(pressure::thermal_from_state),
            // SoC temperatures come with the IOReport power source (power.csv).
            temp_c: None,
        }
    }

    /// Nothing is read on other platforms.
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    pub fn read(&mut self) -> MachinePressure {
        MachinePressure::default()
    }
}

/// The energy `pid` has used since it started, nJ: Some(Err) with the OS's reason where it cannot
/// be read, None where the platform keeps no such counter (Linux).
pub fn energy_nj(pid: u32) -> Option<Result<u64, String>> {
    #[cfg(target_os = "macos")]
    return Some(tokengun_macos::system::energy_nj(pid).map_err(|e| e.to_string()));
    #[cfg(not(target_os = "macos"))]
    {
        let _ = pid;
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_psi_swap_and_the_hottest_zone_from_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let (proc_root, sys_root) = (dir.path().join("proc"), dir.path().join("sys"));
        std::fs::create_dir_all(proc_root.join("pressure")).unwrap();
        for (zone, md) in [
            ("thermal_zone0", "41000"),
            ("thermal_zone1", "67500"),
            ("cooling_device0", "99000"),
        ] {
            let d = sys_root.join("class/thermal").join(zone);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("temp"), md).unwrap();
        }
        let mut r = PressureReader::new(&proc_root, &sys_root);
        // Nothing there yet: every figure None, never 0.
        let none = r.read();
        assert_eq!((none.mem_pressure, none.swap_used_bytes), (None, None));
        std::fs::write(
            proc_root.join("pressure/memory"),
            "some avg10=23.00 avg60=5.00 avg300=1.00 total=9\nfull avg10=2.00 avg60=0.00 avg300=0.00 total=1\n",
        )
        .unwrap();
        std::fs::write(
            proc_root.join("meminfo"),
            "SwapTotal: 1000 kB\nSwapFree: 600 kB\n",
        )
        .unwrap();
        let p = r.read();
        assert_eq!(p.mem_pressure, Some(pressure::MEM_WARN));
        assert_eq!(p.mem_stall_pct, Some(23.0));
        assert_eq!(p.swap_used_bytes, Some(400 * 1024));
        assert_eq!(p.temp_c, Some(67.5));
        assert_eq!(p.thermal_pressure, None);
    }
}
