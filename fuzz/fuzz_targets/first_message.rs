//! The first-message auth frame (DESIGN §3.3). Input: the text of the first frame (`$KEY` stands
//! for the valid key).
//!
//! Properties: a frame yields a credential exactly when an independent reading says it is one
//! JSON object without duplicate members, with `"type": "auth"` and one or more credential
//! fields (`session_api_key`, `token` by default), all non-empty strings with the same value;
//! any string value round-trips through a serialised frame; a later frame is filtered as an
//! auth frame exactly when it is such an object with no other members; the credential then
//! authenticates only when it is the valid key, and every refusal is canonical (4001 and a
//! fixed reason, never the credential).
#![no_main]

use std::sync::OnceLock;

use axum_keyguard::fuzzing::{
    auth_credential, first_message_fields, is_auth_frame, resolve_message,
};
use axum_keyguard::ws::FirstMessage;
use axum_keyguard::{AuthRejectionKind as K, Guard, KeyId, Keys, SourceKind};
use axum_keyguard_fuzz::{check_rejection, expand, now, object_members, KEY};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The independent reading of a first frame.
fn oracle(text: &str, fields: &[String]) -> Option<String> {
    let members = object_members(text.as_bytes())?;
    for (i, (k, _)) in members.iter().enumerate() {
        if members[..i].iter().any(|(j, _)| j == k) {
            return None; // a duplicate member
        }
    }
    if !members
        .iter()
        .any(|(k, v)| k == "type" && *v == Value::String("auth".into()))
    {
        return None;
    }
    let values: Vec<&Value> = members
        .iter()
        .filter(|(k, _)| fields.contains(k))
        .map(|(_, v)| v)
        .collect();
    let first = match values.first()? {
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => return None,
    };
    values
        .iter()
        .all(|v| v.as_str() == Some(first.as_str()))
        .then_some(first)
}

fn oracle_is_auth_frame(text: &str, fields: &[String]) -> bool {
    let Some(members) = object_members(text.as_bytes()) else {
        return false;
    };
    let unique = members
        .iter()
        .enumerate()
        .all(|(i, (k, _))| !members[..i].iter().any(|(j, _)| j == k));
    unique
        && members
            .iter()
            .any(|(k, v)| k == "type" && v.as_str() == Some("auth"))
        && members
            .iter()
            .all(|(k, _)| k == "type" || fields.contains(k))
}

static GUARD: OnceLock<Guard<KeyId>> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let input = expand(input);
    // A frame that is not UTF-8 is a binary frame, refused before any parsing.
    let Ok(text) = std::str::from_utf8(&input) else {
        return;
    };
    let default_fields = first_message_fields(&FirstMessage::new());
    assert_eq!(default_fields, ["session_api_key", "token"]);
    let token_only = vec!["token".to_owned()];
    for fields in [&default_fields, &token_only] {
        let got = auth_credential(text, fields);
        assert_eq!(got, oracle(text, fields), "first frame {text:?}");
        assert_eq!(
            is_auth_frame(text, fields),
            oracle_is_auth_frame(text, fields),
            "later frame {text:?}"
        );
    }

    // Any string round-trips through a serialised frame, in either field, or both when equal.
    if !text.is_empty() {
        for frame in [
            serde_json::json!({"type": "auth", "session_api_key": text}),
            serde_json::json!({"token": text, "type": "auth"}),
            serde_json::json!({"type": "auth", "token": text, "session_api_key": text}),
        ] {
            let frame = frame.to_string();
            assert_eq!(
                auth_credential(&frame, &default_fields).as_deref(),
                Some(text)
            );
            assert!(is_auth_frame(&frame, &default_fields));
        }
        let differ = serde_json::json!({"type": "auth", "token": text, "session_api_key": format!("{text}x")});
        assert_eq!(auth_credential(&differ.to_string(), &default_fields), None);
    }

    // The credential authenticates only when it is the key; refusals are canonical.
    let guard = GUARD.get_or_init(|| {
        Guard::builder()
            .with_verifier(Keys::new([KEY]).expect("valid key"))
            .with_first_message_auth(FirstMessage::new())
            .build()
            .expect("valid guard")
    });
    if let Some(credential) = auth_credential(text, &default_fields) {
        match now(resolve_message(guard, &credential)) {
            Ok(verified) => {
                assert_eq!(credential, KEY);
                assert_eq!(verified.source(), SourceKind::Message);
            }
            Err(rejection) => {
                check_rejection(&rejection, &[credential.as_bytes(), text.as_bytes()]);
                assert_eq!(rejection.close_code(), 4001);
                let expected =
                    if credential.len() > axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN {
                        K::CredentialTooLong
                    } else {
                        K::InvalidCredential
                    };
                assert_eq!(rejection.kind(), expected);
            }
        }
    }
});
