//! The Unix control socket: careful creation and peer credentials.
//!
//! A socket is bound, chmod-ed and removed by path; its directory is
//! checked first (ours, writable by no one else, through `safefile`), so
//! those path operations cannot be redirected. Hence the local exception
//! to the crate's rule that host files go through `safefile`.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::net::{UnixListener, UnixStream};

use crate::api::auth::Peer;
use crate::server::ServerError;

/// Binds `path`: creates a missing parent directory 0755 (and refuses one
/// that is not ours or is writable by others), replaces a stale
/// socket but refuses any other kind of file (or a socket someone still
/// answers on), then sets `mode` and, when given, the group.
pub fn bind(path: &Path, mode: u32, group: &str) -> Result<UnixListener, ServerError> {
    let err = |message: String| ServerError::Socket {
        path: path.to_path_buf(),
        message,
    };
    // The directory is ours and writable by no one else, so nobody can
    // put something of theirs where clients look for the socket.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::system::safefile::ensure_own_dir(dir, 0o755)
            .map_err(|e| err(format!("its directory: {e}")))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(
                    "another process is serving on this socket; stop it first".into(),
                ));
            }
            std::fs::remove_file(path).map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(err(
                "exists and is not a socket; refusing to remove it (move it away or change listen.socket)"
                    .into(),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| err(format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(format!("cannot set mode {mode:o}: {e}")))?;
    if !group.is_empty() {
        let gid = nix::unistd::Group::from_name(group)
            .map_err(|e| err(format!("cannot look up group {group:?}: {e}")))?
            .ok_or_else(|| {
                err(format!(
                    "group {group:?} (listen.socket_group) does not exist"
                ))
            })?
            .gid;
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| err(format!("cannot give it to group {group:?}: {e}")))?;
    }
    Ok(listener)
}

/// The kernel's word on who connected (SO_PEERCRED), not the client's.
pub fn peer(stream: &UnixStream) -> Result<Peer, std::io::Error> {
    let cred = getsockopt(stream, PeerCredentials)?;
    Ok(Peer::Unix {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// Removes the socket at shutdown (a missing one is fine).
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!(error = %e, "socket removal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_regular_file_and_replaces_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        let e = bind(&file, 0o660, "").unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

        let sock = dir.path().join("sub/dir/s.sock");
        let l = bind(&sock, 0o660, "").unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: refused.
        assert!(bind(&sock, 0o660, "").is_err());
        drop(l);
        // Stale: replaced.
        let _l = bind(&sock, 0o600, "").unwrap();

        let client = UnixStream::connect(&sock).await.unwrap();
        let p = peer(&client).unwrap();
        assert!(matches!(p, Peer::Unix { uid, .. } if uid == nix::unistd::getuid().as_raw()));
    }
}
