//! The tray↔service channel on Windows: not built yet. It is to be a named pipe whose security
//! descriptor admits SYSTEM, Administrators and the interactive user, the service checking
//! the connected client's token (the counterpart of `SO_PEERCRED`), issue 11. Until then
//! there is no endpoint: the service runs without its tray, and `status` and `doctor` say
//! that the channel is not available on this platform.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A client's end of the channel. None can exist yet ([`connect`] always fails).
pub enum Stream {}

/// The service's end of one connection (a named pipe's server end).
pub type Connection = tokio::net::windows::named_pipe::NamedPipeServer;

fn not_yet() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "the control channel (a named pipe) is not built for Windows yet")
}

/// No endpoint yet.
pub fn server_endpoint() -> Option<PathBuf> {
    None
}

/// No endpoint yet.
pub fn client_endpoints() -> Vec<PathBuf> {
    Vec::new()
}

/// Always `Unsupported`, for now.
pub fn connect(_endpoint: &Path) -> io::Result<Stream> {
    Err(not_yet())
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        match *self {}
    }

    pub fn set_read_timeout(&self, _timeout: Option<Duration>) -> io::Result<()> {
        match *self {}
    }

    pub fn set_write_timeout(&self, _timeout: Option<Duration>) -> io::Result<()> {
        match *self {}
    }
}

impl Read for Stream {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
}

impl Write for Stream {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }
}

/// The service's listening end. None can exist yet ([`Listener::bind`] always fails).
pub enum Listener {}

impl Listener {
    /// Always `Unsupported`, for now.
    pub fn bind(_endpoint: &Path) -> io::Result<Listener> {
        Err(not_yet())
    }

    pub async fn accept(&self) -> io::Result<Connection> {
        match *self {}
    }
}

/// Who is on the other end of a connection.
pub enum Peer {}

/// Always `Unsupported`, for now.
pub fn peer(_conn: &Connection) -> io::Result<Peer> {
    Err(not_yet())
}

impl Peer {
    pub fn admit(&self) -> Result<(), String> {
        match *self {}
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}
