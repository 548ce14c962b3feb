//! The metric names of [`PowerReading`](super::PowerReading) and their units (the unit is the
//! name's suffix).

/// Power of the device (W). The system's power is the sum over devices.
pub const POWER_W: &str = "power_w";
/// A cumulative energy counter (J since the source started), when the source has one.
pub const ENERGY_J: &str = "energy_j";
/// A power figure averaged by the source itself over its own window (W; NVML's default).
pub const POWER_AVG_W: &str = "power_avg_w";
/// Core (GPU graphics/SM) clock, MHz.
pub const FREQ_MHZ: &str = "freq_mhz";
/// Memory clock, MHz.
pub const MEM_FREQ_MHZ: &str = "mem_freq_mhz";
/// Busy (active residency / utilisation), percent.
pub const BUSY_PCT: &str = "busy_pct";
/// Memory controller busy, percent.
pub const MEM_BUSY_PCT: &str = "mem_busy_pct";
/// Device memory in use, bytes.
pub const MEM_USED_BYTES: &str = "mem_used_bytes";
/// Temperature, degrees Celsius.
pub const TEMP_C: &str = "temp_c";
/// Apple Silicon parts of `power_w` (W).
pub const CPU_POWER_W: &str = "cpu_power_w";
pub const GPU_POWER_W: &str = "gpu_power_w";
pub const ANE_POWER_W: &str = "ane_power_w";
/// Apple Silicon DRAM power (W; IOReport), not part of `power_w` (as powermetrics' combined power).
pub const DRAM_POWER_W: &str = "dram_power_w";
/// The whole machine's power from the SMC (`PSTR`, W), where the chip has it; not summed with
/// the devices' `power_w`.
pub const SYS_POWER_W: &str = "sys_power_w";
/// GPU temperature, degrees Celsius (where `temp_c` is the CPU's).
pub const GPU_TEMP_C: &str = "gpu_temp_c";
/// macOS thermal pressure: 0 nominal, 1 moderate... (see `powermetrics`), 4 critical.
pub const THERMAL_PRESSURE: &str = "thermal_pressure";

/// The unit of a metric, for the CSV's unit column.
pub fn unit(metric: &str) -> &'static str {
    if metric.ends_with("_w") {
        "W"
    } else if metric.ends_with("_j") {
        "J"
    } else if metric.ends_with("_mhz") {
        "MHz"
    } else if metric.ends_with("_pct") {
        "%"
    } else if metric.ends_with("_bytes") {
        "B"
    } else if metric.ends_with("_c") {
        "C"
    } else {
        ""
    }
}
