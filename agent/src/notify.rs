//! systemd readiness: `READY=1` (and `STOPPING=1`) on `$NOTIFY_SOCKET`, for `Type=notify` units.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket systemd names; an
//! `@`-prefixed name is in the Linux abstract namespace. Nothing happens without the variable.

/// Sends `state` (e.g. `"READY=1\nSTATUS=listening on 0.0.0.0:7411"`) to the service manager.
/// Returns false when no manager asked for notifications.
#[cfg(unix)]
pub fn notify(state: &str) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "NOTIFY_SOCKET names an abstract socket, which only Linux has",
            ));
        }
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&target))?;
    }
    Ok(true)
}

/// Not a unix system: no systemd to tell.
#[cfg(not(unix))]
pub fn notify(_state: &str) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn nothing_is_sent_without_the_variable() {
        // The variable is read per call; tests run without systemd.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!super::notify("READY=1").unwrap());
        }
    }
}
