//! The enrollment desk's log: one CSV row per enrolled key, appended to the `--csv` file.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use keytally_protocol::mapping::rfc3339;
use keytally_protocol::record::DeviceRecord;

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per enrolled key; the header is written when the file is new.
pub(super) fn append_csv(path: &Path, r: &DeviceRecord, email: &str, tags: &str, status: &str, result: &str) -> io::Result<()> {
    let new = !path.exists();
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    if new {
        writeln!(f, "enrolled_at,unique_id,serial,name,firmware,owner,tags,status,result")?;
    }
    let y = &r.yubikey;
    let row = [
        rfc3339(SystemTime::now()),
        y.unique_id.clone(),
        y.serial_number.clone().unwrap_or_default(),
        y.name.clone(),
        y.firmware_version.clone(),
        email.to_string(),
        tags.to_string(),
        status.to_string(),
        result.to_string(),
    ];
    writeln!(f, "{}", row.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","))?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
