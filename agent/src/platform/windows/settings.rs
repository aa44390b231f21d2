//! Settings from the Windows registry: the values of `HKLM\SOFTWARE\keytally` (what the MSI
//! writes from its properties) and of the policy key `HKLM\SOFTWARE\Policies\keytally` (what
//! Group Policy and Intune write), read from the 64-bit view. Each value's name is the config
//! key it sets (`server`, `token_file`, …); `crate::config` merges them with the file and
//! says where each came from. Only text (REG_SZ) is read: any other type is reported, with
//! the value's path, as unusable.

use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_NO_MORE_ITEMS, ERROR_SUCCESS};
use windows_sys::Win32::System::Registry::{
    RegCloseKey, RegEnumValueW, RegOpenKeyExW, HKEY, HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_64KEY, REG_BINARY, REG_DWORD, REG_EXPAND_SZ,
    REG_MULTI_SZ, REG_QWORD, REG_SZ,
};

use crate::platform::Setting;

/// The machine key (the MSI's) and the policy key; later ones win.
const KEYS: [(&str, bool); 2] = [(r"SOFTWARE\keytally", false), (r"SOFTWARE\Policies\keytally", true)];

/// Every value of both keys, the machine key's first; a key that is absent gives none, one
/// that cannot be read gives one unusable entry saying so.
pub fn read() -> Vec<Setting> {
    let mut out = Vec::new();
    for (path, policy) in KEYS {
        let source = format!(r"HKLM\{path}");
        match values(path) {
            Ok(vs) => out.extend(vs.into_iter().map(|(name, value)| Setting { source: source.clone(), policy, name, value })),
            Err(e) => out.push(Setting { source: source.clone(), policy, name: "(key)".into(), value: Err(format!("cannot be read: {e}")) }),
        }
    }
    out
}

/// A registry value's name, and its text or why it is unusable.
type NamedValue = (String, Result<String, String>);

/// The values of one HKLM key; an absent key has none.
fn values(path: &str) -> Result<Vec<NamedValue>, std::io::Error> {
    let wide: Vec<u16> = path.encode_utf16().chain(Some(0)).collect();
    let mut key: HKEY = std::ptr::null_mut();
    // SAFETY: a NUL-terminated subkey; `key` is closed below.
    let rc = unsafe { RegOpenKeyExW(HKEY_LOCAL_MACHINE, wide.as_ptr(), 0, KEY_READ | KEY_WOW64_64KEY, &mut key) };
    if rc == ERROR_FILE_NOT_FOUND {
        return Ok(Vec::new());
    }
    if rc != ERROR_SUCCESS {
        return Err(std::io::Error::from_raw_os_error(rc as i32));
    }
    let mut out = Vec::new();
    let mut index = 0u32;
    loop {
        // Value names are at most 16,383 characters; data up to 64 KiB is plenty for a path
        // or a URL (more is reported as unusable).
        let mut name = vec![0u16; 16_384];
        let mut name_len = name.len() as u32;
        let mut data = vec![0u8; 65_536];
        let mut data_len = data.len() as u32;
        let mut kind = 0u32;
        // SAFETY: every buffer is writable for the length passed with it.
        let rc = unsafe {
            RegEnumValueW(key, index, name.as_mut_ptr(), &mut name_len, std::ptr::null(), &mut kind, data.as_mut_ptr(), &mut data_len)
        };
        if rc == ERROR_NO_MORE_ITEMS {
            break;
        }
        index += 1;
        let name = String::from_utf16_lossy(&name[..name_len as usize]);
        if rc != ERROR_SUCCESS {
            out.push((name, Err(format!("cannot be read: {}", std::io::Error::from_raw_os_error(rc as i32)))));
            continue;
        }
        out.push((name, text(kind, &data[..data_len as usize])));
    }
    // SAFETY: opened above.
    unsafe { RegCloseKey(key) };
    Ok(out)
}

/// A REG_SZ value's text; any other type is unusable, said in one line.
fn text(kind: u32, data: &[u8]) -> Result<String, String> {
    if kind != REG_SZ {
        let name = match kind {
            REG_DWORD => "a number (REG_DWORD)",
            REG_QWORD => "a number (REG_QWORD)",
            REG_EXPAND_SZ => "an expandable string (REG_EXPAND_SZ)",
            REG_MULTI_SZ => "a list (REG_MULTI_SZ)",
            REG_BINARY => "binary data (REG_BINARY)",
            _ => "not text",
        };
        return Err(format!("is {name}; keytally reads text values (REG_SZ)"));
    }
    let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16(&units[..end]).map_err(|_| "is not valid text (UTF-16)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16z(s: &str) -> Vec<u8> {
        s.encode_utf16().chain(Some(0)).flat_map(u16::to_le_bytes).collect()
    }

    #[test]
    fn text_values_and_wrong_types() {
        assert_eq!(text(REG_SZ, &utf16z("https://x.example/api")), Ok("https://x.example/api".into()));
        assert_eq!(text(REG_SZ, &[]), Ok(String::new()));
        assert!(text(REG_DWORD, &[1, 0, 0, 0]).unwrap_err().contains("REG_DWORD"));
        assert!(text(REG_MULTI_SZ, &utf16z("a")).unwrap_err().contains("REG_SZ"));
        assert!(text(REG_SZ, &[0x00, 0xD8, 0x41, 0x00]).unwrap_err().contains("UTF-16"));
    }

    /// Against the real registry (Wine's under the lab): the keys are absent in a fresh
    /// prefix, which is no setting and no error.
    #[test]
    fn absent_keys_give_nothing() {
        assert!(values(r"SOFTWARE\keytally-test-absent").unwrap().is_empty());
    }
}
