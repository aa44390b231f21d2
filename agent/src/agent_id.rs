//! The agent id: a UUID made once per installation and kept in the state directory.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use uuid::Uuid;

const FILE: &str = "agent-id";


/// Reads the agent id, creating it on first use. The file is written to a temporary name
/// and renamed, so a crash never leaves a half-written id.
pub fn load_or_create(state_dir: &Path) -> io::Result<Uuid> {
    let path = state_dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            return Uuid::parse_str(text.trim()).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a UUID: {e}", path.display()))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(state_dir)?;
    let id = Uuid::new_v4();
    let tmp = state_dir.join(format!("{FILE}.tmp.{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{id}")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    Ok(id)
}

/// The agent id kept in `state_dir` (the configuration's, where the outbox lives too), or
/// a fresh one for this run (with a warning) when it cannot be used. Reading keys must not
/// fail because of it.
pub fn agent_id(state_dir: &Path) -> Uuid {
    let dir = state_dir;
    load_or_create(dir).unwrap_or_else(|e| {
        tracing::warn!("cannot keep the agent id in {}: {e}; using a temporary one", dir.display());
        Uuid::new_v4()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = std::env::temp_dir().join(format!("keytally-agent-id-{}", Uuid::new_v4()));
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a, b);
        fs::write(dir.join(FILE), "garbage").unwrap();
        assert!(load_or_create(&dir).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
