//! The first-message auth frame's strict grammar: `{"type":"auth", <credential field>: "…"}`, no
//! duplicate members, credential fields that agree.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::credential::Credential;

/// The top-level members of a JSON object, in order; `None` for anything that is not an object
/// or has a duplicate member.
fn members(text: &str) -> Option<Vec<(String, serde_json::Value)>> {
    struct Members(Vec<(String, serde_json::Value)>);

    impl<'de> Deserialize<'de> for Members {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Object;
            impl<'de> Visitor<'de> for Object {
                type Value = Members;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object without duplicate members")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                    let mut members: Vec<(String, serde_json::Value)> = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        if members.iter().any(|(k, _)| *k == key) {
                            return Err(serde::de::Error::custom("duplicate member"));
                        }
                        let value = map.next_value()?;
                        members.push((key, value));
                    }
                    Ok(Members(members))
                }
            }
            deserializer.deserialize_map(Object)
        }
    }

    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

fn is_auth_type(members: &[(String, serde_json::Value)]) -> bool {
    members
        .iter()
        .any(|(k, v)| k == "type" && v.as_str() == Some("auth"))
}

/// The credential of a first-message auth frame: a JSON object without duplicate members, with
/// `"type": "auth"` and the credential, as a non-empty string, in one or more of `fields` (all
/// present ones must agree, compared by digest in constant time). `None` for anything else.
pub(crate) fn auth_credential(text: &str, fields: &[String]) -> Option<String> {
    let members = members(text)?;
    if !is_auth_type(&members) {
        return None;
    }
    let mut found: Option<Credential<'_>> = None;
    for (_, value) in members.iter().filter(|(k, _)| fields.contains(k)) {
        let serde_json::Value::String(value) = value else {
            return None;
        };
        if value.is_empty() {
            return None;
        }
        let credential = Credential::new(value.as_str());
        match &found {
            None => found = Some(credential),
            Some(first) if first.same_value(&credential) => {}
            Some(_) => return None,
        }
    }
    found.map(|c| c.expose().to_owned())
}

/// Whether a text frame after authentication is an auth frame again (`"type": "auth"` and no
/// members other than `type` and the credential fields). Such frames never reach the handler.
pub(crate) fn is_auth_frame(text: &str, fields: &[String]) -> bool {
    // Most frames are not JSON objects about auth: skip the parse.
    // `auth` may be written with JSON escapes (`"\u0061uth"`): skip only frames with neither.
    if !text.trim_start().starts_with('{') || !(text.contains("auth") || text.contains('\\')) {
        return false;
    }
    members(text).is_some_and(|members| {
        is_auth_type(&members)
            && members
                .iter()
                .all(|(k, _)| k == "type" || fields.contains(k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::FirstMessage;

    #[test]
    fn auth_frames_are_parsed_strictly() {
        let fields = FirstMessage::new().fields;
        let get = |t: &str| auth_credential(t, &fields);
        assert_eq!(
            get(r#"{"type":"auth","session_api_key":"k"}"#),
            Some("k".into())
        );
        assert_eq!(
            get(r#"{"type":"auth","token":"k","extra":1}"#),
            Some("k".into())
        );
        assert_eq!(
            get(r#" {"token":"k","type":"auth","session_api_key":"k"}"#),
            Some("k".into())
        );
        for bad in [
            r#"{"type":"auth","token":"k","session_api_key":"j"}"#,
            r#"{"type":"auth","session_api_key":"a","session_api_key":"b"}"#,
            r#"{"type":"auth","session_api_key":"a","session_api_key":"a"}"#,
            r#"{"type":"auth","type":"auth","token":"k"}"#,
            r#"{"type":"ping","type":"auth","token":"k"}"#,
            r#"{"type":"auth"}"#,
            r#"{"type":"auth","token":""}"#,
            r#"{"type":"auth","token":5}"#,
            r#"{"type":"auth","token":null}"#,
            r#"{"type":"ping","token":"k"}"#,
            r#"{"type":["auth"],"token":"k"}"#,
            r#"{"token":"k"}"#,
            r#"["auth","k"]"#,
            "not json",
            "\"k\"",
            r#"{"type":"auth","token":"k"} trailing"#,
        ] {
            assert_eq!(get(bad), None, "{bad}");
        }
    }

    #[test]
    fn later_auth_frames_are_recognised_and_others_pass() {
        let fields = FirstMessage::new().fields;
        assert!(is_auth_frame(r#"{"type":"auth","token":"x"}"#, &fields));
        assert!(is_auth_frame(r#"{"type":"auth"}"#, &fields));
        assert!(!is_auth_frame(r#"{"type":"auth","role":"user"}"#, &fields));
        assert!(!is_auth_frame(
            r#"{"role":"user","content":"auth"}"#,
            &fields
        ));
        assert!(!is_auth_frame("auth", &fields));
    }
}
