//! Who is logged in at this machine, on Windows. Not read yet: the owner suggestion is left
//! out until this gives the user of the active console session (`DOMAIN\name` and its SID;
//! an RDP session's user is not the owner of a key plugged into the console), issue 11.

/// A person with a session at this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    /// `DOMAIN\name`.
    pub name: String,
    /// The account's SID string (`S-1-5-21-…`).
    pub sid: String,
}

impl LocalUser {
    /// The account's id as the owner record's `sid` carries it.
    pub fn sid(&self) -> String {
        self.sid.clone()
    }
}

/// The user of the active console session: not read yet, so none.
pub fn logged_in_user() -> Option<LocalUser> {
    None
}
