//! The benchmark's JSON, through serde_json as `sectionfs list --json` does: a [`Json`] is
//! a serde_json value (a non-finite number becomes `null`), built with [`obj`] and [`arr`].

pub use serde_json::Value as Json;

/// An object from its fields.
pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// An array from its items.
pub fn arr<T: Into<Json>>(items: impl IntoIterator<Item = T>) -> Json {
    Json::Array(items.into_iter().map(Into::into).collect())
}

/// Two-space indented, with a final newline.
pub fn render(v: &Json) -> String {
    let mut out = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    out.push('\n');
    out
}

/// Checks `text` with Python's parser in strict mode (json.tool itself accepts `NaN`):
/// `Err` with its complaint. `Ok(false)` when python3 is not installed.
pub fn validate_with_python(text: &str) -> Result<bool, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    const STRICT: &str = "import json, sys\n\
        def bad(c): sys.exit('not JSON: ' + c)\n\
        json.load(sys.stdin, parse_constant=bad)\n";
    let child = Command::new("python3")
        .args(["-c", STRICT])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("spawn python3: {e}")),
    };
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(text.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for python3: {e}"))?;
    if let Some(Err(e)) = written {
        return Err(format!("write to python3: {e}"));
    }
    if out.status.success() {
        Ok(true)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// What the smoke run checks besides the real output: the awkward cases, which the
/// figures of one quiet run may never contain.
pub fn awkward_sample() -> Json {
    obj([
        (
            "quote \" backslash \\",
            Json::from("tab\t nl\n cr\r esc\u{1b} nul\u{0} del\u{7f}"),
        ),
        ("utf8", Json::from("µs – ≤ 名前")),
        (
            "numbers",
            arr([0.0, -0.0, 1e-9, 1.5e300, f64::NAN, f64::INFINITY]),
        ),
        ("int", Json::from(u64::MAX)),
        ("empty", obj(Vec::<(String, Json)>::new())),
        ("none", Json::Array(vec![])),
    ])
}
