//! Settings from the OS's own configuration store: none on Unix (the config file and the
//! environment are the whole configuration there).

use crate::platform::Setting;

/// No OS settings store here.
pub fn read() -> Vec<Setting> {
    Vec::new()
}
