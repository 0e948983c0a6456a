//! Disk admission: before a task downloads, the bytes it still needs are
//! checked against the free space of the store's file system less
//! `VECTORIZE_MIN_FREE_BYTES`, so that a model too large for the disk is
//! refused up front rather than failing with ENOSPC at 90%.

use std::path::PathBuf;

/// The store's file system and the space to leave free on it.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    root: PathBuf,
    min_free: u64,
}

impl DiskSpace {
    pub fn new(root: PathBuf, min_free: u64) -> Self {
        Self { root, min_free }
    }

    /// Bytes an unprivileged writer may still use on the store's file system.
    fn available(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.root)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// `Err` with a sentence for the user when `needed` more bytes would
    /// leave less than the minimum free. A file system that cannot be
    /// asked admits (the write itself then reports what is wrong).
    pub fn admit(&self, needed: u64, what: &str) -> Result<(), String> {
        let available = match self.available() {
            Ok(available) => available,
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "cannot read the free space of the store");
                return Ok(());
            }
        };
        let usable = available.saturating_sub(self.min_free);
        if needed <= usable {
            return Ok(());
        }
        Err(format!(
            "{what} needs {} more on disk, but the store's file system has {} free and keeps {} \
             free (VECTORIZE_MIN_FREE_BYTES); free some space or delete models, then upload again",
            human(needed),
            human(available),
            human(self.min_free)
        ))
    }
}

/// A byte count for people: `1.5 GiB`, `300 KiB`, `12 B`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_what_fits_and_names_the_sizes_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = DiskSpace::new(dir.path().into(), 0);
        assert!(roomy.admit(1, "x").is_ok());
        let full = DiskSpace::new(dir.path().into(), u64::MAX);
        let refusal = full.admit(3 << 29, "repository a/b").unwrap_err();
        assert!(
            refusal.starts_with("repository a/b needs 1.5 GiB more on disk"),
            "{refusal}"
        );
        assert!(refusal.contains("VECTORIZE_MIN_FREE_BYTES"), "{refusal}");
        assert_eq!(human(12), "12 B");
    }
}
