//! Linux sysfs, read as plain files under a root path (so tests use a fake tree): the helpers
//! the sysfs power sources ([`super::rapl`], [`super::amdgpu`]) read it with.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// A file's text, trimmed.
pub(super) fn read_trim(p: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(p).map(|s| s.trim().to_string())
}

/// A file holding one number.
pub(super) fn read_u64(p: &Path) -> std::io::Result<u64> {
    read_trim(p)?
        .parse()
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", p.display())))
}

/// A folder's entries, sorted (none when it cannot be read).
pub(super) fn sorted_dir(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Writes a fake sysfs file (with its folders) for tests.
#[cfg(test)]
pub(super) fn write(root: &Path, rel: &str, v: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{v}\n")).unwrap();
}
