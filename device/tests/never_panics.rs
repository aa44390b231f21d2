//! Property tests: no input from a key, however broken or hostile, makes a parser panic.

use std::collections::VecDeque;

use keytally_device::caps::Transport;
use keytally_device::device_info::{parse_page, PageFraming};
use keytally_device::error::LinkError;
use keytally_device::identify::identify_smartcard;
use keytally_device::usb_ids::Pid;
use keytally_device::smartcard::{SmartCardConnection, SmartCardProtocol};
use keytally_device::version::Version;
use keytally_device::{tlv, DeviceInfo};
use proptest::prelude::*;

/// A card that answers every command with the next of a list of arbitrary byte strings.
struct Hostile(VecDeque<Vec<u8>>);

impl SmartCardConnection for Hostile {
    fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>, LinkError> {
        self.0.pop_front().ok_or(LinkError::Removed)
    }
    fn transport(&self) -> Transport {
        Transport::Nfc
    }
}

/// Answers that end in a status word the identifier will act on, so the fuzzer gets deep.
fn answer() -> impl Strategy<Value = Vec<u8>> {
    (proptest::collection::vec(any::<u8>(), 0..300), prop_oneof![
        Just([0x90u8, 0x00]),
        Just([0x6A, 0x82]),
        Just([0x61, 0x10]),
        any::<[u8; 2]>(),
    ])
        .prop_map(|(mut data, sw)| {
            data.extend_from_slice(&sw);
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn tlv_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = tlv::parse_all(&data);
        let _ = parse_page(&data, PageFraming::Exact);
        let _ = parse_page(&data, PageFraming::IgnoreTrailing);
        if let Ok(map) = tlv::parse_map(&data) {
            let _ = DeviceInfo::parse_tlvs(&map, Version::new(5, 0, 0));
        }
    }

    #[test]
    fn device_info_never_panics_on_any_tag_values(
        values in proptest::collection::vec((0u32..0x30, proptest::collection::vec(any::<u8>(), 0..20)), 0..40)
    ) {
        let map = values.into_iter().collect();
        let _ = DeviceInfo::parse_tlvs(&map, Version::new(4, 2, 4));
    }

    #[test]
    fn identification_never_panics(answers in proptest::collection::vec(answer(), 0..30), pid in prop_oneof![Just(None), Just(Pid::new(0x0407)), Just(Pid::new(0x0116))]) {
        let mut card = Hostile(answers.into());
        let mut protocol = SmartCardProtocol::new(&mut card);
        let _ = identify_smartcard(&mut protocol, pid);
        prop_assert!(protocol.apdus_sent() < 64, "identification must stay bounded");
    }
}
