//! Properties of the key parser: no input panics it, every valid key
//! reads back exactly, and no one-character edit of a key line gives a key
//! that still counts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;

use super::*;
use crate::table::LicenseType;

fn issuer() -> IssuerKey {
    IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
}

fn trusted() -> TrustedIssuers {
    TrustedIssuers::from_iter([issuer().trusted()])
}

prop_compose! {
    fn statements()(
        key_id in "[!-~]{1,64}",
        license_type in "[A-Z0-9_-]{1,32}",
        count in 1..=u32::MAX,
        serial in "[!-~]{1,64}",
        not_before in 0..MAX_TIME_S,
        lasts in proptest::option::of(1..=MAX_TIME_S),
    ) -> KeyStatement {
        KeyStatement {
            key_id,
            license_type: LicenseType::new(license_type),
            count,
            serial,
            not_before,
            expires: lasts.map(|d| not_before.saturating_add(d).min(MAX_TIME_S)).filter(|e| *e > not_before),
            issuer: "acme".into(),
        }
    }
}

/// Characters a key line is made of, and some it never has.
const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+/= #\x00";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics_the_parsers(text in any::<String>()) {
        let _ = text.parse::<SignedKey>();
        let _ = text.parse::<TrustedIssuer>();
        let _ = parse_key_file(std::path::Path::new("keys"), &text);
    }

    #[test]
    fn text_that_looks_like_a_key_never_panics_the_parser(rest in "[A-Za-z0-9_.-]{0,1100}") {
        let _ = format!("vpk1.{rest}").parse::<SignedKey>();
    }

    #[test]
    fn arbitrary_statement_bytes_never_panic_the_parser(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        signature in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let mut bytes = vec![FORMAT_V1];
        bytes.extend_from_slice(&body);
        let line = format!("vpk1.{}.{}", URL_SAFE_NO_PAD.encode(&bytes), URL_SAFE_NO_PAD.encode(&signature));
        if let Ok(key) = line.parse::<SignedKey>() {
            // Whatever parses is a valid statement that prints back as it came...
            prop_assert_eq!(key.to_string(), line);
            key.statement().validate().unwrap();
            // ...and a random signature does not make it count.
            prop_assert!(key.verify(&trusted(), key.serial(), key.statement().not_before).is_err());
        }
    }
}

// Each case signs and verifies, slow in a debug build: fewer cases.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn damaged_statement_bytes_never_panic_and_never_count(
        statement in statements(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let key = issuer().sign(statement).unwrap();
        let line = key.to_string();
        let (head, signature) = line.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&head[PREFIX.len()..]).unwrap();
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        let damaged = format!("vpk1.{}.{signature}", URL_SAFE_NO_PAD.encode(&bytes));
        if damaged != line {
            if let Ok(k) = damaged.parse::<SignedKey>() {
                prop_assert!(k.verify(&trusted(), k.serial(), k.statement().not_before).is_err());
            }
        }
    }

    #[test]
    fn every_valid_key_reads_back_exactly_and_verifies(statement in statements()) {
        let key = issuer().sign(statement.clone()).unwrap();
        let line = key.to_string();
        prop_assert!(line.len() <= MAX_LINE_LEN, "{} bytes", line.len());
        prop_assert!(line.bytes().all(|b| b.is_ascii_graphic() && b != b'#'));
        let parsed: SignedKey = line.parse().unwrap();
        prop_assert_eq!(&parsed, &key);
        prop_assert_eq!(parsed.to_string(), line);
        prop_assert_eq!(parsed.verify(&trusted(), &statement.serial, statement.not_before).unwrap(), &statement);
    }

    #[test]
    fn any_one_character_change_is_refused_or_does_not_verify(
        statement in statements(),
        at in any::<prop::sample::Index>(),
        with in any::<prop::sample::Index>(),
    ) {
        let key = issuer().sign(statement).unwrap();
        let line = key.to_string();
        let i = at.index(line.len());
        let mut c = with.get(CHARSET);
        if *c == line.as_bytes()[i] {
            c = &b'!';
        }
        let mut edited = line.clone().into_bytes();
        edited[i] = *c;
        let edited = String::from_utf8(edited).unwrap();
        match edited.parse::<SignedKey>() {
            Err(_) => {}
            Ok(k) => {
                prop_assert!(k != key);
                // Whoever presents it, whenever: it never counts.
                let now = k.statement().not_before;
                let refused = k.verify(&trusted(), k.serial(), now);
                prop_assert!(
                    matches!(refused, Err(KeyError::BadSignature { .. }) | Err(KeyError::UnknownIssuer { .. })),
                    "{:?}", refused
                );
            }
        }
    }
}
