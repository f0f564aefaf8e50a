//! Files and directories only their owner may read: the embedded store's database and the
//! generated signing key hold every balance, password hash and session, whatever the process's
//! umask. Modes are set explicitly (the umask only ever takes permissions away, and one that
//! takes the owner's would lock the process out). On other platforms these do nothing special.

use std::io;
use std::path::Path;

/// Creates `dir` and any missing parents, each with mode 0700. A directory that already exists
/// is left as it is: it was chosen, and may be shared, by whoever runs the process.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_private_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        Ok(()) => set_private(dir, 0o700),
        // Created meanwhile by another process starting alongside: theirs to keep as it is.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the file at `path` with mode 0600 if it does not exist yet, or makes an existing one
/// private (see [`make_private`]).
pub fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => set_private(path, 0o600),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => make_private(path),
        Err(e) => Err(e),
    }
}

/// Takes group and other permissions away from an existing file (mode 0600 for a read-write
/// file); a missing file is no error.
pub fn make_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            set_private(path, mode & 0o700)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn set_private(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The permission bits, in octal as `ls` and `chmod` show them (for tests).
#[cfg(all(test, unix))]
pub(crate) fn mode(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    format!(
        "{:o}",
        std::fs::metadata(path)
            .expect("the file exists")
            .permissions()
            .mode()
            & 0o777
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_directories_are_private_and_existing_ones_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let nested = root.path().join("a").join("b");
        create_private_dir_all(&nested).unwrap();
        assert_eq!(mode(&root.path().join("a")), "700");
        assert_eq!(mode(&nested), "700");
        assert_eq!(
            mode(root.path()),
            "755",
            "an existing directory is not changed"
        );
        create_private_dir_all(&nested).unwrap();
    }

    #[test]
    fn files_are_created_private_and_existing_ones_made_private() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("new");
        create_private_file(&new).unwrap();
        assert_eq!(mode(&new), "600");
        let old = root.path().join("old");
        std::fs::write(&old, b"kept").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o664)).unwrap();
        create_private_file(&old).unwrap();
        assert_eq!(mode(&old), "600");
        assert_eq!(std::fs::read(&old).unwrap(), b"kept");
        make_private(&root.path().join("missing")).unwrap();
    }
}
