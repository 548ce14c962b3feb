//! The machine's thermal and memory pressure, read from what each OS says (parsing is plain Rust
//! tested everywhere): macOS thermal pressure levels and `kern.memorystatus_vm_pressure_level`,
//! Linux PSI (`/proc/pressure/memory`), swap from `/proc/meminfo`, and sysfs temperatures.

/// The machine's pressure figures at one instant (each None where it cannot be read here).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct MachinePressure {
    /// [`MEM_NORMAL`], [`MEM_WARN`] or [`MEM_CRITICAL`].
    pub mem_pressure: Option<u8>,
    /// Linux PSI `some avg10`: share of the last 10 s some task stalled on memory, percent.
    pub mem_stall_pct: Option<f64>,
    pub swap_used_bytes: Option<u64>,
    /// [`THERMAL_NOMINAL`] .. [`THERMAL_SLEEPING`].
    pub thermal_pressure: Option<u8>,
    /// The hottest sensor that can be read without root, degrees Celsius.
    pub temp_c: Option<f64>,
}

/// Memory pressure levels, as macOS names them.
pub const MEM_NORMAL: u8 = 0;
pub const MEM_WARN: u8 = 1;
pub const MEM_CRITICAL: u8 = 2;

/// Thermal pressure levels (`OSThermalPressureLevel`: nominal, moderate, heavy, trapping, sleeping).
pub const THERMAL_NOMINAL: u8 = 0;
pub const THERMAL_MODERATE: u8 = 1;
pub const THERMAL_HEAVY: u8 = 2;
pub const THERMAL_TRAPPING: u8 = 3;
pub const THERMAL_SLEEPING: u8 = 4;

/// The name of a thermal pressure level, for the report.
pub fn thermal_name(level: u8) -> &'static str {
    match level {
        THERMAL_NOMINAL => "nominal",
        THERMAL_MODERATE => "moderate",
        THERMAL_HEAVY => "heavy",
        THERMAL_TRAPPING => "trapping",
        _ => "sleeping",
    }
}

/// The name of a memory pressure level, for the report.
pub fn mem_name(level: u8) -> &'static str {
    match level {
        MEM_NORMAL => "normal",
        MEM_WARN => "warn",
        _ => "critical",
    }
}

/// The level of the `com.apple.system.thermalpressurelevel` notification's state (0 nominal ..
/// 4 sleeping); None for a value no macOS sends.
pub fn thermal_from_state(state: u64) -> Option<u8> {
    u8::try_from(state).ok().filter(|s| *s <= THERMAL_SLEEPING)
}

/// The level of a thermal pressure name as powermetrics spells it (`Nominal`, `Moderate`,
/// `Heavy`, `Trapping`, `Sleeping`; older names `Fair`/`Light`, `Serious`, `Critical`).
pub fn thermal_from_name(name: &str) -> Option<u8> {
    match name.trim() {
        "Nominal" => Some(THERMAL_NOMINAL),
        "Moderate" | "Fair" | "Light" => Some(THERMAL_MODERATE),
        "Heavy" | "Serious" => Some(THERMAL_HEAVY),
        "Trapping" => Some(THERMAL_TRAPPING),
        "Sleeping" | "Critical" => Some(THERMAL_SLEEPING),
        _ => None,
    }
}

/// The level of sysctl `kern.memorystatus_vm_pressure_level` (1 normal, 2 warn, 4 critical).
pub fn mem_from_macos(level: i64) -> Option<u8> {
    match level {
        1 => Some(MEM_NORMAL),
        2 => Some(MEM_WARN),
        4 => Some(MEM_CRITICAL),
        _ => None,
    }
}

/// Linux PSI of one resource: the `avg10` of its `some` and `full` lines, percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psi {
    pub some_avg10: f64,
    pub full_avg10: Option<f64>,
}

/// A stall share (PSI `avg10`) at which memory counts as under pressure, percent.
pub const PSI_WARN_PCT: f64 = 10.0;

impl Psi {
    /// A level like macOS's from the stalls: `full` (every task stalled) at or above
    /// [`PSI_WARN_PCT`] is critical, `some` at or above it is warn.
    pub fn level(&self) -> u8 {
        if self.full_avg10.is_some_and(|f| f >= PSI_WARN_PCT) {
            MEM_CRITICAL
        } else if self.some_avg10 >= PSI_WARN_PCT {
            MEM_WARN
        } else {
            MEM_NORMAL
        }
    }
}

/// Parses `/proc/pressure/memory` (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, then `full
/// ...`); None when it has no `some` line.
pub fn parse_psi(text: &str) -> Option<Psi> {
    let avg10 = |kind: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("avg10="))?
            .parse::<f64>()
            .ok()
    };
    Some(Psi {
        some_avg10: avg10("some")?,
        full_avg10: avg10("full"),
    })
}

/// Swap in use from `/proc/meminfo` (`SwapTotal` - `SwapFree`, kB), bytes.
pub fn parse_meminfo_swap(text: &str) -> Option<u64> {
    let kb = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(kb("SwapTotal")?.saturating_sub(kb("SwapFree")?) * 1024)
}

/// A sysfs temperature (`/sys/class/thermal/thermal_zone*/temp`, millidegrees) in degrees; None
/// for what no sensor reads (blank, or the -273 °C some drivers report when off).
pub fn parse_millidegrees(text: &str) -> Option<f64> {
    let md: i64 = text.trim().parse().ok()?;
    (md > -100_000 && md < 200_000).then(|| md as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_psi_meminfo_and_temperatures() {
        let psi = parse_psi(
            "some avg10=12.50 avg60=3.10 avg300=0.80 total=123456\n\
             full avg10=0.40 avg60=0.10 avg300=0.00 total=2345\n",
        )
        .unwrap();
        assert_eq!((psi.some_avg10, psi.full_avg10), (12.5, Some(0.4)));
        assert_eq!(psi.level(), MEM_WARN);
        // Kernels before 5.13 in containers give only `some`.
        let some = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert_eq!((some.full_avg10, some.level()), (None, MEM_NORMAL));
        let full = Psi {
            some_avg10: 50.0,
            full_avg10: Some(20.0),
        };
        assert_eq!(full.level(), MEM_CRITICAL);
        assert_eq!(parse_psi(""), None);
        assert_eq!(parse_psi("some avg10=x"), None);
        let meminfo = "MemTotal:       16318000 kB\nSwapCached:  0 kB\nSwapTotal:       2097148 kB\nSwapFree:        1048572 kB\n";
        assert_eq!(parse_meminfo_swap(meminfo), Some(1_048_576 * 1024));
        assert_eq!(parse_meminfo_swap("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_millidegrees("47850\n"), Some(47.85));
        assert_eq!(parse_millidegrees("-273000"), None);
        assert_eq!(parse_millidegrees(""), None);
    }

    #[test]
    fn macos_levels() {
        assert_eq!(mem_from_macos(1), Some(MEM_NORMAL));
        assert_eq!(mem_from_macos(2), Some(MEM_WARN));
        assert_eq!(mem_from_macos(4), Some(MEM_CRITICAL));
        assert_eq!(mem_from_macos(0), None);
        assert_eq!(thermal_from_state(2), Some(THERMAL_HEAVY));
        assert_eq!(thermal_from_state(9), None);
        assert_eq!(thermal_from_name("Nominal"), Some(THERMAL_NOMINAL));
        assert_eq!(thermal_from_name("Serious"), Some(THERMAL_HEAVY));
        assert_eq!(thermal_from_name("??"), None);
        assert_eq!(thermal_name(THERMAL_TRAPPING), "trapping");
        assert_eq!(mem_name(MEM_CRITICAL), "critical");
    }
}
