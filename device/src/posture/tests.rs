//! Posture over a scripted card: every applet, and each bad answer spoiling only its own
//! fields with one warning.

use super::*;
use crate::caps::FormFactor;
use crate::device_info::PerTransport;
use crate::error::{LinkError, ParseError as ParseErrorAlias, StatusWord};
use crate::smartcard::aid;
use crate::smartcard::SmartCardConnection;
use crate::version::Version;

/// A card that answers by command, as a YubiKey 5 NFC in its factory state does.
struct Card {
    transport: Transport,
    /// Replaces the answer to commands starting with the prefix.
    overrides: Vec<(Vec<u8>, Vec<u8>)>,
    sent: Vec<Vec<u8>>,
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// getInfo of a 5.7 key without a PIN: versions, options, 0x0C false, 0x0D 4, 0x14 100.
fn get_info() -> Vec<u8> {
    let mut v = vec![0x00, 0xA5, 0x01, 0x81, 0x68];
    v.extend_from_slice(b"FIDO_2_1");
    v.extend_from_slice(&[0x04, 0xA2, 0x62]);
    v.extend_from_slice(b"rk");
    v.push(0xF5);
    v.push(0x69);
    v.extend_from_slice(b"clientPin");
    v.push(0xF4);
    v.extend_from_slice(&[0x0C, 0xF4, 0x0D, 0x04, 0x14, 0x18, 0x64]);
    v
}

impl Card {
    fn new(transport: Transport) -> Self {
        Self {
            transport,
            overrides: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn answering(mut self, prefix: &str, answer: Vec<u8>) -> Self {
        self.overrides.push((hex(prefix), answer));
        self
    }

    fn factory(command: &[u8]) -> Vec<u8> {
        let ok = |mut d: Vec<u8>| {
            d.extend_from_slice(&[0x90, 0x00]);
            d
        };
        match command {
            [0x00, 0xA4, 0x04, 0x00, _, aid @ ..] if aid == aid::PIV => ok(vec![]),
            [0x00, 0xF7, 0x00, 0x80, ..] => ok(hex("0101FF 050101 06020303")),
            [0x00, 0xF7, 0x00, 0x81, ..] => ok(hex("0101FF 050101 06020303")),
            [0x00, 0xF7, 0x00, 0x9B, ..] => ok(hex("01010A 02020001 050101")),
            [0x00, 0xA4, 0x04, 0x00, _, aid @ ..] if aid == aid::FIDO => ok(b"U2F_V2".to_vec()),
            [0x80, 0x10, 0x00, 0x00, 0x01, 0x04, ..] => ok(get_info()),
            [0x00, 0xA4, 0x04, 0x00, _, aid @ ..] if aid == aid::OPENPGP => ok(vec![]),
            [0x00, 0xCA, 0x00, 0xC4, ..] => ok(hex("00 7F 7F 7F 03 00 03")),
            [0x00, 0xA4, 0x04, 0x00, _, aid @ ..] if aid == aid::OATH => {
                ok(hex("7903050704 7108 0102030405060708"))
            }
            [0x00, 0xA4, 0x04, 0x00, _, aid @ ..] if aid == aid::OTP => ok(hex("050704 01 0100")),
            _ => vec![0x6D, 0x00],
        }
    }
}

impl SmartCardConnection for Card {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, LinkError> {
        self.sent.push(command.to_vec());
        if let Some((_, answer)) = self.overrides.iter().find(|(p, _)| command.starts_with(p)) {
            return Ok(answer.clone());
        }
        Ok(Card::factory(command))
    }

    fn transport(&self) -> Transport {
        self.transport
    }
}

fn info(version: Version, enabled: Capabilities) -> DeviceInfo {
    let mut info = DeviceInfo::synthesized(
        version,
        Some(1),
        PerTransport {
            usb: Some(Capabilities(0x023F)),
            nfc: Some(Capabilities(0x023F)),
        },
    );
    info.enabled = PerTransport {
        usb: Some(enabled),
        nfc: Some(enabled),
    };
    info.form_factor = FormFactor::UsbAKeychain;
    info
}

fn read_card(card: &mut Card, version: Version, enabled: Capabilities) -> PostureRead {
    let mut protocol = SmartCardProtocol::new(card);
    read_smartcard(&mut protocol, &info(version, enabled))
}

const ALL: Capabilities = Capabilities(0x023F);

fn factory() -> Posture {
    Posture {
        piv_pin_default: Some(true),
        piv_puk_default: Some(true),
        piv_management_key_default: Some(true),
        piv_pin_retries: Some(3),
        piv_puk_retries: Some(3),
        fido2_pin_set: Some(false),
        fido2_uv_enrolled: None,
        fido2_force_pin_change: Some(false),
        fido2_min_pin_length: Some(4),
        fido2_remaining_discoverable_credentials: Some(100),
        openpgp_pin_retries: Some([3, 0, 3]),
        oath_password_set: Some(false),
        otp_slots_configured: Some([true, false]),
    }
}

#[test]
fn reads_every_applet_over_nfc() {
    let mut card = Card::new(Transport::Nfc);
    let read = read_card(&mut card, Version::new(5, 7, 4), ALL);
    assert_eq!(read.warnings, vec![]);
    assert_eq!(read.posture, factory());
    // SELECT + 3 × GET METADATA, SELECT + getInfo, SELECT + GET DATA, SELECT OATH, SELECT OTP.
    assert_eq!(read.transfers, 10);
    assert!(
        card.sent.iter().all(|c| c[1] != 0x20),
        "nothing is verified"
    );
}

#[test]
fn over_usb_ccid_fido2_is_left_to_the_hid_interface() {
    let mut card = Card::new(Transport::Usb);
    let read = read_card(&mut card, Version::new(5, 7, 4), ALL);
    assert_eq!(read.warnings, vec![]);
    assert_eq!(read.posture.fido2_pin_set, None);
    assert_eq!(read.posture.piv_pin_default, Some(true));
    assert!(
        !card.sent.iter().any(|c| c[0] == 0x80),
        "no NFCCTAP over USB"
    );
}

#[test]
fn disabled_applets_and_old_firmware_are_not_asked() {
    let mut card = Card::new(Transport::Nfc);
    let read = read_card(
        &mut card,
        Version::new(5, 7, 4),
        Capabilities(Capabilities::OATH.0 | Capabilities::FIDO2.0),
    );
    assert_eq!(read.warnings, vec![]);
    assert_eq!(read.posture.oath_password_set, Some(false));
    assert_eq!(read.posture.fido2_min_pin_length, Some(4));
    assert_eq!(
        (
            read.posture.piv_pin_default,
            read.posture.openpgp_pin_retries,
            read.posture.otp_slots_configured
        ),
        (None, None, None)
    );
    assert_eq!(read.transfers, 3);

    // PIV metadata needs 5.3: a 5.2 key's PIV is not asked; its other applets are.
    let mut card = Card::new(Transport::Nfc);
    let read = read_card(&mut card, Version::new(5, 2, 7), ALL);
    assert_eq!(read.warnings, vec![]);
    assert_eq!(read.posture.piv_pin_retries, None);
    assert_eq!(read.posture.openpgp_pin_retries, Some([3, 0, 3]));
    assert!(!card.sent.iter().any(|c| c[1] == 0xF7));
}

/// One bad applet: exactly its fields are `None`, one warning names it, the rest is intact.
fn spoiled(card: Card, applet: Applet, blanks: impl Fn(&mut Posture)) -> PostureError {
    let mut card = card;
    let read = read_card(&mut card, Version::new(5, 7, 4), ALL);
    let mut want = factory();
    blanks(&mut want);
    assert_eq!(read.posture, want);
    assert_eq!(read.warnings.len(), 1, "{:?}", read.warnings);
    assert_eq!(read.warnings[0].applet, applet);
    read.warnings[0].error.clone()
}

fn no_piv(p: &mut Posture) {
    p.piv_pin_default = None;
    p.piv_puk_default = None;
    p.piv_management_key_default = None;
    p.piv_pin_retries = None;
    p.piv_puk_retries = None;
}

fn no_fido2(p: &mut Posture) {
    p.fido2_pin_set = None;
    p.fido2_force_pin_change = None;
    p.fido2_min_pin_length = None;
    p.fido2_remaining_discoverable_credentials = None;
}

#[test]
fn malformed_piv_metadata_spoils_only_piv() {
    // The retries TLV says 9 bytes, 1 follows (the virtual key's piv-metadata-malformed).
    let card = Card::new(Transport::Nfc).answering("00F700", hex("0101FF 050101 060903 9000"));
    let error = spoiled(card, Applet::Piv, no_piv);
    assert_eq!(
        error,
        PostureError::Key(Error::Parse(ParseErrorAlias::TruncatedTlv { offset: 6 }))
    );
    assert_eq!(
        piv::parse_metadata(&hex("0101FF 0502 0101")),
        Err(ParseErrorAlias::BadValueLength {
            tag: 5,
            len: 2,
            expected: "1 byte"
        })
    );
    assert_eq!(
        piv::parse_metadata(&hex("060203 03")),
        Err(ParseErrorAlias::MissingTag(5))
    );
    assert_eq!(
        piv::parse_metadata(&hex("050100 0603 030303")),
        Err(ParseErrorAlias::BadValueLength {
            tag: 6,
            len: 3,
            expected: "2 bytes"
        })
    );
}

#[test]
fn one_bad_piv_slot_keeps_the_others() {
    let card = Card::new(Transport::Nfc).answering("00F70081", hex("6F00"));
    let error = spoiled(card, Applet::Piv, |p| {
        p.piv_puk_default = None;
        p.piv_puk_retries = None;
    });
    assert_eq!(error, PostureError::Key(Error::Status(StatusWord(0x6F00))));
}

#[test]
fn unknown_status_words_spoil_only_their_applet() {
    let card = Card::new(Transport::Nfc).answering("00F700", hex("6F00"));
    assert_eq!(
        spoiled(card, Applet::Piv, no_piv),
        PostureError::Key(Error::Status(StatusWord(0x6F00)))
    );
    let card = Card::new(Transport::Nfc).answering("00CA00C4", hex("6F00"));
    spoiled(card, Applet::OpenPgp, |p| p.openpgp_pin_retries = None);
    let card = Card::new(Transport::Nfc).answering("801000", hex("6F00"));
    spoiled(card, Applet::Fido2, no_fido2);
}

#[test]
fn short_openpgp_status_and_malformed_oath_select() {
    let card = Card::new(Transport::Nfc).answering("00CA00C4", hex("0001 9000"));
    spoiled(card, Applet::OpenPgp, |p| p.openpgp_pin_retries = None);
    let oath = [
        &[0x00, 0xA4, 0x04, 0x00, aid::OATH.len() as u8][..],
        aid::OATH,
    ]
    .concat();
    let oath_prefix: String = oath.iter().map(|b| format!("{b:02X}")).collect();
    let card = Card::new(Transport::Nfc).answering(&oath_prefix, hex("7903050704 714001 02 9000"));
    spoiled(card, Applet::Oath, |p| p.oath_password_set = None);
    assert_eq!(
        oath::parse_select(&hex(
            "7903050704 7108 0102030405060708 7408 0102030405060708 7B0101"
        )),
        Ok(true)
    );
}

#[test]
fn truncated_or_deep_get_info_spoils_only_fido2() {
    let full = get_info();
    let truncated = [&full[..full.len() / 2], &[0x90, 0x00]].concat();
    let card = Card::new(Transport::Nfc).answering("801000", truncated);
    assert!(matches!(
        spoiled(card, Applet::Fido2, no_fido2),
        PostureError::Cbor(cbor::CborError::Truncated(_))
    ));

    let mut deep = vec![0x00, 0xA1, 0x01];
    deep.extend(std::iter::repeat_n(0x81, 199));
    deep.extend_from_slice(&[0x80, 0x90, 0x00]);
    let card = Card::new(Transport::Nfc).answering("801000", deep);
    assert_eq!(
        spoiled(card, Applet::Fido2, no_fido2),
        PostureError::Cbor(cbor::CborError::TooDeep)
    );

    let card = Card::new(Transport::Nfc).answering("801000", hex("2E 9000"));
    assert_eq!(
        spoiled(card, Applet::Fido2, no_fido2),
        PostureError::Ctap2Status(0x2E)
    );
}

#[test]
fn get_info_fields_of_the_wrong_type_are_errors() {
    // {4: {"clientPin": 1}}
    let mut bad = vec![0x00, 0xA1, 0x04, 0xA1, 0x69];
    bad.extend_from_slice(b"clientPin");
    bad.push(0x01);
    assert_eq!(
        fido2::parse_get_info(&bad),
        Err(PostureError::Malformed(
            "options.clientPin is not a boolean"
        ))
    );
    // {13: -1}
    assert!(fido2::parse_get_info(&[0x00, 0xA1, 0x0D, 0x20]).is_err());
    // [] at the top.
    assert!(fido2::parse_get_info(&[0x00, 0x80]).is_err());
    assert!(fido2::parse_get_info(&[]).is_err());
    // A map with none of the fields: every field unknown, no error.
    assert_eq!(
        fido2::parse_get_info(&[0x00, 0xA0]),
        Ok(fido2::GetInfoPosture::default())
    );
}

#[test]
fn a_card_that_leaves_mid_read_warns_for_each_applet_and_does_not_panic() {
    struct Gone;
    impl SmartCardConnection for Gone {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, LinkError> {
            Err(LinkError::Removed)
        }
        fn transport(&self) -> Transport {
            Transport::Nfc
        }
    }
    let mut gone = Gone;
    let mut protocol = SmartCardProtocol::new(&mut gone);
    let read = read_smartcard(&mut protocol, &info(Version::new(5, 7, 4), ALL));
    assert_eq!(read.posture, Posture::default());
    let applets: Vec<Applet> = read.warnings.iter().map(|w| w.applet).collect();
    assert_eq!(
        applets,
        vec![
            Applet::Piv,
            Applet::Fido2,
            Applet::OpenPgp,
            Applet::Oath,
            Applet::Otp
        ]
    );
}

#[test]
fn fido2_over_ctaphid_and_a_deep_answer_there_is_a_warning() {
    use crate::transport::ctaphid::tests::{fast, FakeFido};
    use crate::transport::ctaphid::{cmd, CtapHidDevice};
    const NONCE: [u8; 8] = [9; 8];
    const CID: u32 = 0x0102_0304;

    let mut dev = FakeFido::new();
    dev.init_answer(NONCE, CID, [5, 7, 4], 0x05);
    dev.respond(CID, cmd::CBOR, &get_info());
    let mut ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
    let mut read = PostureRead::default();
    read_fido2_hid(&mut ctap, &info(Version::new(5, 7, 4), ALL), &mut read);
    assert_eq!(read.warnings, vec![]);
    assert_eq!((read.posture.fido2_pin_set, read.posture.fido2_min_pin_length), (Some(false), Some(4)));
    assert_eq!(read.posture.fido2_remaining_discoverable_credentials, Some(100));
    assert!(read.transfers >= 2, "one request and one answer packet at least");
    // The request was CTAPHID_CBOR with the getInfo command byte only.
    assert_eq!(&dev.written[1][4..8], &[0x80 | cmd::CBOR, 0x00, 0x01, 0x04]);

    let mut dev = FakeFido::new();
    dev.init_answer(NONCE, CID, [5, 7, 4], 0x05);
    let mut deep = vec![0x00, 0xA1, 0x01];
    deep.extend(std::iter::repeat_n(0x81, 199));
    deep.push(0x80);
    dev.respond(CID, cmd::CBOR, &deep);
    let mut ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
    let mut read = PostureRead::default();
    read_fido2_hid(&mut ctap, &info(Version::new(5, 7, 4), ALL), &mut read);
    assert_eq!(read.posture, Posture::default());
    assert_eq!(read.warnings, vec![PostureWarning { applet: Applet::Fido2, error: PostureError::Cbor(cbor::CborError::TooDeep) }]);

    // FIDO2 disabled over USB: not asked at all.
    let mut dev = FakeFido::new();
    dev.init_answer(NONCE, CID, [5, 7, 4], 0x05);
    let mut ctap = CtapHidDevice::init(&mut dev, NONCE, fast()).unwrap();
    let mut read = PostureRead::default();
    read_fido2_hid(&mut ctap, &info(Version::new(5, 7, 4), Capabilities::OTP), &mut read);
    assert_eq!((read.warnings.len(), read.transfers), (0, 0));
}
