//! What `--json` prints: one object per command on stdout, each carrying `"version"`, the
//! schema version of the JSON output, first. Scripts can check it; it goes up when a key
//! changes meaning or goes away (new keys do not change it).

/// The JSON output's schema version. 2: byte counts are named `<what>_bytes` everywhere, as
/// `gc`, `status` and the Prometheus metrics always had them (`push`, `pull`, `restore` and
/// `remote gc` said `bytes_<what>`: `received_bytes` was `bytes_received`, and so on).
pub const JSON_VERSION: u32 = 2;

/// `json` (one serialized JSON value) with `"version"` as the first key when it is an
/// object; anything else unchanged. Works on the text, so the keys keep their order.
pub fn versioned(json: impl std::fmt::Display) -> String {
    let s = json.to_string();
    match s.strip_prefix('{') {
        Some("}") => format!("{{\"version\":{JSON_VERSION}}}"),
        Some(rest) => format!("{{\"version\":{JSON_VERSION},{rest}"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_goes_first_in_objects_only() {
        assert_eq!(versioned("{}"), r#"{"version":2}"#);
        assert_eq!(
            versioned(r#"{"b":1,"a":2}"#),
            r#"{"version":2,"b":1,"a":2}"#
        );
        assert_eq!(versioned("[1,2]"), "[1,2]");
        let v: serde_json::Value =
            serde_json::from_str(&versioned(serde_json::json!({"x": {"y": 1}}))).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["x"]["y"], 1);
    }
}
