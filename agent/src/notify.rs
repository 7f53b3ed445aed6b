//! Telling systemd about the daemon's life: `READY=1`, `STOPPING=1` and a `STATUS=` line,
//! sent as one datagram each to the socket named by `NOTIFY_SOCKET` (the `sd_notify`
//! protocol that `Type=notify` units use).
//!
//! Every call is best effort: without `NOTIFY_SOCKET` (not run by systemd, or a unit that is
//! not `Type=notify`) it does nothing, and a failure to send is logged at debug level and
//! otherwise ignored, because a daemon must never stop over its own status reports. This is
//! deliberately not a full `sd_notify`: no file-descriptor passing, no watchdog, no
//! unsetting of the variable.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets to the notification socket's address.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{NOTIFY_SOCKET} is empty")]
    EmptyAddress,
    #[error("invalid notification socket address {address}")]
    Address {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("creating a datagram socket")]
    Socket(#[source] io::Error),
    #[error("sending {state:?} to notification socket {address}")]
    Send {
        state: String,
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("sent {sent} of {len} bytes to notification socket {address}")]
    Short {
        address: String,
        sent: usize,
        len: usize,
    },
}

/// The daemon has started and is serving: systemd moves the unit to "active".
pub fn ready() {
    notify("READY=1");
}

/// The daemon is shutting down (it may still take a while to finish running hooks).
pub fn stopping() {
    notify("STOPPING=1");
}

/// A one-line status shown by `systemctl status hoist-agent`.
pub fn status(text: &str) {
    notify(&status_message(text));
}

/// `STATUS=` with the text on one line: a newline would start a new assignment.
fn status_message(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

fn notify(state: &str) {
    let Some(address) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send_to(&address, state) {
        tracing::debug!(error = %format!("{e:#}"), "systemd notification not sent");
    }
}

/// Sends one notification datagram to `address`: a filesystem path, or an abstract socket
/// name written with a leading `@` as systemd does.
pub(crate) fn send_to(address: &OsStr, state: &str) -> Result<(), NotifyError> {
    let bytes = address.as_bytes();
    if bytes.is_empty() {
        return Err(NotifyError::EmptyAddress);
    }
    let shown = || address.to_string_lossy().into_owned();
    let addr = socket_addr(bytes).map_err(|source| NotifyError::Address {
        address: shown(),
        source,
    })?;
    let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
    let sent = socket
        .send_to_addr(state.as_bytes(), &addr)
        .map_err(|source| NotifyError::Send {
            state: state.to_string(),
            address: shown(),
            source,
        })?;
    if sent != state.len() {
        return Err(NotifyError::Short {
            address: shown(),
            sent,
            len: state.len(),
        });
    }
    Ok(())
}

fn socket_addr(bytes: &[u8]) -> io::Result<SocketAddr> {
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None => SocketAddr::from_pathname(OsStr::from_bytes(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_each_state_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        for state in [
            "READY=1".to_string(),
            "STOPPING=1".to_string(),
            status_message("deploying d-1: AfterInstall"),
        ] {
            send_to(path.as_os_str(), &state).unwrap();
            assert_eq!(receive(&listener), state);
        }
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("hoist-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let address = format!("@{name}");
        send_to(OsStr::new(&address), "READY=1").unwrap();
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn status_stays_on_one_line() {
        assert_eq!(status_message("a\nb\r\nc"), "STATUS=a b  c");
        assert_eq!(status_message("idle"), "STATUS=idle");
    }

    #[test]
    fn failures_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens.sock");
        let err = send_to(missing.as_os_str(), "READY=1").unwrap_err();
        assert!(matches!(err, NotifyError::Send { .. }), "{err:?}");
        assert!(err.to_string().contains("nobody-listens.sock"), "{err}");

        let err = send_to(OsStr::new(""), "READY=1").unwrap_err();
        assert!(matches!(err, NotifyError::EmptyAddress), "{err:?}");

        let too_long = format!("/{}", "x".repeat(200));
        let err = send_to(OsStr::new(&too_long), "READY=1").unwrap_err();
        assert!(matches!(err, NotifyError::Address { .. }), "{err:?}");
    }
}
