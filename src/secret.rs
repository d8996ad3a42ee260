//! Secret files (credentials, notifier URLs and tokens, the session key):
//! read trimmed, refused empty, warned about when others can read them.

use std::path::Path;

/// Reads a secret from a file; warns loudly when others may read it too.
///
/// # Errors
/// An unreadable or empty file.
pub fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} file `{}`: {e}", path.display()))?;
    warn_if_shared(path, what);
    let s = s.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!s.is_empty(), "{what} file `{}` is empty", path.display());
    Ok(s)
}

/// Warns when a secret file can be read by users other than its owner.
pub fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:04o}"),
                "{what} file is readable by {}: make it 0600 (chmod go-rwx)",
                if mode & 0o004 != 0 { "every user" } else { "its group" }
            );
        }
    }
}
