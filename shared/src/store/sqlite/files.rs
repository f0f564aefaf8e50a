//! The database's files are their owner's alone: they hold every balance, password hash and
//! session.

use std::path::{Path, PathBuf};

use crate::files;
use crate::store::StoreError;

/// What SQLite keeps beside the database file (WAL mode uses the first two).
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Readies the files at `path` before SQLite opens them: the directory is created (0700) when
/// missing, and so is the database file (0600); files there already, from an older build or a
/// looser umask, are made private. SQLite creates a missing `-wal` or `-shm` with the database
/// file's own mode, whatever the umask, so they come out 0600 as well.
pub(super) fn prepare(path: &Path) -> Result<(), StoreError> {
    let cannot = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::unavailable(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_private_dir_all(dir).map_err(|e| cannot("create", dir, e))?;
    }
    if !path.exists() {
        files::create_private_file(path).map_err(|e| cannot("create", path, e))?;
    }
    for file in std::iter::once(path.to_owned()).chain(COMPANIONS.map(|s| companion(path, s))) {
        // A file someone else owns cannot be changed; the store still works with it.
        if let Err(e) = files::make_private(&file) {
            tracing::warn!(path = %file.display(), error = %e, "cannot make a database file private");
        }
    }
    Ok(())
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::SqliteStore;
    use crate::domain::{Email, Timestamp, UserId, Username};
    use crate::store::{NewUser, Store};

    use crate::files::mode;

    async fn write_once(store: &SqliteStore, name: &str) {
        store
            .create_user(&NewUser {
                id: UserId::new(),
                username: Username::parse(name).expect("a valid username"),
                email: Email::parse(&format!("{name}@example.com")).expect("a valid email"),
                password_hash: "$argon2id$not-a-real-hash".into(),
                is_staff: false,
                now: Timestamp::now(),
            })
            .await
            .expect("the user is created");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_files_and_their_directory_are_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data").join("lighttech");
        let path = dir.join("lighttech.db");
        // The most permissive umask, for this process, while the store opens and writes.
        // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
        let before = unsafe { libc::umask(0) };
        let store = SqliteStore::open(&path).await;
        if let Ok(store) = &store {
            write_once(store, "alice").await;
        }
        // SAFETY: as above.
        unsafe { libc::umask(before) };
        let store = store.unwrap();

        assert_eq!(mode(&dir), "700");
        assert_eq!(mode(&root.path().join("data")), "700");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            assert_eq!(mode(&entry.path()), "600", "{:?}", entry.file_name());
            names.push(entry.file_name().into_string().unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            ["lighttech.db", "lighttech.db-shm", "lighttech.db-wal"]
        );
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_left_readable_are_made_private_and_a_chosen_directory_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("bank.db");
        let store = SqliteStore::open(&path).await.unwrap();
        write_once(&store, "alice").await;
        drop(store);
        // As an older build left them.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        write_once(&store, "bob").await;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            assert_eq!(mode(&p), "600", "{}", p.display());
        }
        assert_eq!(
            mode(dir.path()),
            "755",
            "a directory that existed is not changed"
        );
    }
}
