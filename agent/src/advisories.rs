//! How the agent names a key's security advisories to a person (scan's table, `status`, the
//! tray menu, the kiosk line, the enrollment desk): the ids only, in the record's order
//! (`observation.advisories`, sorted by id); an advisory that applies only under a condition
//! not settled yet is marked `(if)`. The URLs and the conditions in words are in the record
//! (`scan --json`) and the README's table.

use keytally_protocol::record::{AdvisoryNotice, DeviceRecord};

/// What is said of a key whose advisories were not assessed (its firmware is unknown).
pub const NOT_ASSESSED: &str = "not assessed";

/// `YSA-2024-03`, or `YSA-2020-05 (if)` when it applies only under a condition.
pub fn label(notice: &AdvisoryNotice) -> String {
    if notice.is_certain() {
        notice.id.clone()
    } else {
        format!("{} (if)", notice.id)
    }
}

/// The labels of a record's advisories; `None` when they were not assessed.
pub fn labels(record: &DeviceRecord) -> Option<Vec<String>> {
    let notices = record.observation.as_ref()?.advisories.as_ref()?;
    Some(notices.iter().map(label).collect())
}

/// The labels joined by `sep`: `none` for an empty list, [`NOT_ASSESSED`] for `None`.
pub fn summary(labels: Option<&[String]>, sep: &str) -> String {
    match labels {
        None => NOT_ASSESSED.to_string(),
        Some([]) => "none".to_string(),
        Some(l) => l.join(sep),
    }
}

/// The kiosk line's words for a tap's advisories, ending in two spaces before the push state:
/// `advisories YSA-2024-02,YSA-2024-03  `, `advisories not assessed  `, or nothing when none
/// applies (the line stays as it was).
pub fn tap_words(labels: Option<&[String]>) -> String {
    match labels {
        Some([]) => String::new(),
        l => format!("advisories {}  ", summary(l, ",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::test_record;

    fn notice(id: &str, applies: &str) -> AdvisoryNotice {
        AdvisoryNotice { id: id.into(), url: format!("https://www.yubico.com/{id}"), applies: applies.into() }
    }

    #[test]
    fn ids_with_conditions_marked() {
        let mut r = test_record("1", "YubiKey 5 NFC", Some("1"));
        assert_eq!(labels(&r), Some(vec![]));
        assert_eq!(summary(labels(&r).as_deref(), ", "), "none");
        r.observation.as_mut().unwrap().advisories =
            Some(vec![notice("YSA-2020-05", "if the OpenPGP reset code retry counter is not zero"), notice("YSA-2024-03", "yes")]);
        let l = labels(&r).unwrap();
        assert_eq!(l, ["YSA-2020-05 (if)", "YSA-2024-03"]);
        assert_eq!(summary(Some(&l), ", "), "YSA-2020-05 (if), YSA-2024-03");
        r.observation.as_mut().unwrap().advisories = None;
        assert_eq!(labels(&r), None);
        assert_eq!(summary(None, ", "), "not assessed");
        r.observation = None;
        assert_eq!(labels(&r), None);
        assert_eq!(tap_words(Some(&[])), "");
        assert_eq!(tap_words(None), "advisories not assessed  ");
        assert_eq!(tap_words(Some(&["YSA-2024-02".into(), "YSA-2024-03".into()])), "advisories YSA-2024-02,YSA-2024-03  ");
    }
}
