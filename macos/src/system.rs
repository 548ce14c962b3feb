//! Small macOS calls without root: whether the agent is root, a process's energy counter
//! (`proc_pid_rusage` with `RUSAGE_INFO_V6`), the thermal pressure level (`notify` state of
//! `com.apple.system.thermalpressurelevel`), memory pressure (`kern.memorystatus_vm_pressure_level`)
//! and swap in use (`vm.swapusage`). Each returns the OS's raw value; common's `pressure` and
//! `apple` modules give them meaning.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};

/// `struct rusage_info_v6` (macOS 12+): v4's fields, then the ones after `ri_runnable_time`.
#[repr(C)]
struct RusageInfoV6 {
    v4: libc::rusage_info_v4,
    ri_flags: u64,
    ri_user_ptime: u64,
    ri_system_ptime: u64,
    ri_pinstructions: u64,
    ri_pcycles: u64,
    ri_energy_nj: u64,
    ri_penergy_nj: u64,
    /// Secure time (2), neural footprints (3) and reserved (9) in the SDK's header.
    rest: [u64; 14],
}

const RUSAGE_INFO_V6: c_int = 6;

/// Whether the agent runs as root (powermetrics needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Energy `pid` has used since it started, nJ (`ri_energy_nj`); Err with the OS's reason (another
/// user's process without root, a process gone, a macOS before 12).
pub fn energy_nj(pid: u32) -> Result<u64, std::io::Error> {
    let pid = c_int::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    let mut info = std::mem::MaybeUninit::<RusageInfoV6>::zeroed();
    // SAFETY: the buffer is a zeroed rusage_info_v6 (at least the size the kernel writes for
    // RUSAGE_INFO_V6), and proc_pid_rusage writes only into it.
    let rc = unsafe {
        libc::proc_pid_rusage(
            pid,
            RUSAGE_INFO_V6,
            info.as_mut_ptr().cast::<libc::rusage_info_t>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed, then filled by the kernel: every field is a plain integer.
    let info = unsafe { info.assume_init() };
    Ok(info.ri_energy_nj)
}

unsafe extern "C" {
    fn notify_register_check(name: *const c_char, out_token: *mut c_int) -> u32;
    fn notify_get_state(token: c_int, state: *mut u64) -> u32;
}

const THERMAL_NOTIFICATION: &CStr = c"com.apple.system.thermalpressurelevel";

/// A registration for the thermal pressure level's notification state.
pub struct Thermal {
    token: c_int,
}

impl Thermal {
    /// Registers for the level (no root needed); None when notifyd refuses.
    pub fn new() -> Option<Self> {
        let mut token: c_int = 0;
        // SAFETY: a NUL-terminated name and a valid out pointer.
        let status =
            unsafe { notify_register_check(THERMAL_NOTIFICATION.as_ptr(), &raw mut token) };
        (status == 0).then_some(Self { token })
    }

    /// The level's raw state (0 nominal .. 4 sleeping).
    pub fn state(&self) -> Option<u64> {
        let mut state: u64 = 0;
        // SAFETY: a token notify_register_check gave, and a valid out pointer.
        let status = unsafe { notify_get_state(self.token, &raw mut state) };
        (status == 0).then_some(state)
    }
}

fn sysctl<T: Copy>(name: &CStr) -> Option<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: a NUL-terminated name, and an out buffer of `len` bytes.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            value.as_mut_ptr().cast::<c_void>(),
            &raw mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: the kernel filled the whole value (len checked).
    (rc == 0 && len == std::mem::size_of::<T>()).then(|| unsafe { value.assume_init() })
}

/// `kern.memorystatus_vm_pressure_level`: 1 normal, 2 warn, 4 critical.
pub fn memory_pressure_level() -> Option<i64> {
    sysctl::<c_int>(c"kern.memorystatus_vm_pressure_level").map(i64::from)
}

/// `vm.swapusage`: swap in use, bytes.
pub fn swap_used_bytes() -> Option<u64> {
    sysctl::<libc::xsw_usage>(c"vm.swapusage").map(|x| x.xsu_used)
}
