//! The client's end of the control channel (the tray, `status`, `doctor`): connect, send a
//! request, read messages, each bounded in time.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ClientError, Message, Request, State, MAX_LINE};
use crate::platform::channel::{self, Stream};

/// A connection to the service.
pub struct Client {
    path: PathBuf,
    writer: Stream,
    reader: BufReader<Stream>,
}

impl Client {
    /// Connects to the first of the platform's client endpoints that exists.
    pub fn connect_default() -> Result<Client, ClientError> {
        let paths = channel::client_endpoints();
        // Only a choice between several is looked at first: on Windows the one endpoint is a
        // pipe, which looking at (`exists`) would open, taking a connection of the service's.
        let path = match paths.as_slice() {
            [one] => Some(one),
            _ => paths.iter().find(|p| p.exists()).or(paths.first()),
        };
        let path = path.cloned().unwrap_or_default();
        Client::connect(&path)
    }

    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let shown = path.display().to_string();
        let stream = channel::connect(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => ClientError::NotRunning(shown.clone()),
            std::io::ErrorKind::Unsupported => ClientError::Unsupported,
            _ => ClientError::Io { path: shown.clone(), error },
        })?;
        // Writes are tiny; a service that stops reading must not block the tray.
        let io = |error| ClientError::Io { path: shown.clone(), error };
        stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(Client { path: path.to_owned(), writer: stream, reader })
    }

    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|error| ClientError::Io { path: self.path.display().to_string(), error })
    }

    /// The next message, waiting at most `timeout` (`None`: until one comes or the
    /// service goes away).
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Message, ClientError> {
        let io = |error| ClientError::Io { path: self.path.display().to_string(), error };
        self.reader.get_ref().set_read_timeout(timeout).map_err(io)?;
        let mut line = Vec::new();
        let n = (&mut self.reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return Err(ClientError::Protocol(format!("a line longer than {MAX_LINE} bytes or cut short")));
        }
        match serde_json::from_slice::<Message>(&line) {
            Ok(Message::Refused { reason }) => Err(ClientError::Refused(reason)),
            Ok(m) => Ok(m),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        }
    }

    /// Subscribes and returns the first state.
    pub fn watch(&mut self, timeout: Duration) -> Result<State, ClientError> {
        self.send(&Request::Watch)?;
        self.next_state(Some(timeout))
    }

    /// The next state message, skipping acks.
    pub fn next_state(&mut self, timeout: Option<Duration>) -> Result<State, ClientError> {
        loop {
            if let Message::State(s) = self.next(timeout)? {
                return Ok(s);
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(&dir.path().join("none.sock")).err().unwrap();
        assert!(matches!(err, ClientError::NotRunning(_)), "{err}");
    }
}
