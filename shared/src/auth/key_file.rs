//! The local server's generated keys: `secret_key` (current) and `secret_key.previous` in the
//! data directory, and their rotation (`lighttech-local rotate-key`).
//!
//! A rotation writes the current key into `secret_key.previous`, then a fresh one into
//! `secret_key`, each whole to a file of its own and renamed into place (mode 0600): a crash in
//! between leaves the old key in both, which is a set with one key, never a lost key. A server
//! reads the files once, at start.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::SecretKey;

/// The file of the previous key, next to the current key's file.
pub fn previous_path(current: &Path) -> PathBuf {
    let mut name = current.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    current.with_file_name(name)
}

/// Reads a key file: text, at least 32 bytes once trimmed.
pub fn read(path: &Path) -> Result<SecretKey, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not text", path.display()))?;
    SecretKey::new(text.trim().as_bytes().to_vec()).map_err(|m| format!("{}: {m}", path.display()))
}

/// The previous key kept next to `current`, if there is one.
pub fn read_previous(current: &Path) -> Result<Option<SecretKey>, String> {
    let path = previous_path(current);
    match std::fs::metadata(&path) {
        Ok(_) => read(&path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A fresh random key as the key files hold it (64 hex digits).
pub fn generate() -> String {
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rotates the key in `current`: it becomes the previous key (the one before it is dropped)
/// and a fresh key takes its place. Returns the `kid`s of the new and the previous key.
pub fn rotate(current: &Path) -> Result<(String, String), String> {
    let old = read(current).map_err(|e| {
        format!(
            "{e} (there is no generated key to rotate: the server generates one at its first start)"
        )
    })?;
    replace(&previous_path(current), old.expose())?;
    let new = generate();
    replace(current, new.as_bytes())?;
    let new = SecretKey::new(new.into_bytes())?;
    let kid = |key: &SecretKey| super::key_id(&super::derive_key(key, "jwt"));
    Ok((kid(&new), kid(&old)))
}

/// Writes `contents` to a staged private file, then renames it over `path`.
fn replace(path: &Path, contents: &[u8]) -> Result<(), String> {
    let staged = stage(path, contents)?;
    std::fs::rename(&staged, path).map_err(|e| {
        let _ = std::fs::remove_file(&staged);
        format!("cannot replace {}: {e}", path.display())
    })
}

/// Writes `contents` whole to a new private file (mode 0600) next to `path` and returns its
/// path, for the caller to move into place: a key file never exists half-written.
pub fn stage(path: &Path, contents: &[u8]) -> Result<PathBuf, String> {
    let mut suffix = [0u8; 8];
    rand::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let staged = path.with_extension(format!("new-{suffix}"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&staged).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    written.map(|()| staged.clone()).map_err(|e| {
        let _ = std::fs::remove_file(&staged);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_the_old_key_as_the_previous_one_and_drops_the_older() {
        let dir = tempfile_dir();
        let current = dir.join("secret_key");
        assert!(rotate(&current).unwrap_err().contains("first start"));
        std::fs::write(&current, generate()).unwrap();
        let first = read(&current).unwrap();
        assert_eq!(read_previous(&current).unwrap(), None);
        rotate(&current).unwrap();
        let second = read(&current).unwrap();
        assert_ne!(second, first);
        assert_eq!(read_previous(&current).unwrap(), Some(first.clone()));
        rotate(&current).unwrap();
        assert_eq!(read_previous(&current).unwrap(), Some(second));
        assert_ne!(read(&current).unwrap(), first);
        #[cfg(unix)]
        for path in [current.clone(), previous_path(&current)] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["secret_key", "secret_key.previous"],
            "no staged copies left"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lt-rotate-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
