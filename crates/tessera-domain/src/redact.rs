//! The one place that decides what may be logged.
//!
//! Everything that reaches a log line or a log table (headers, paths and query strings, request
//! and response bodies) passes through these functions first. The rules, in order:
//! - a header, query parameter, form field or JSON key whose *name* is sensitive loses its value
//!   (`Authorization`, `Cookie`, `Set-Cookie`, `client_secret`, `client_assertion`, `password`,
//!   anything containing `secret`, `token`, `password`, `passwd`, `apikey`, `privatekey`);
//! - a *value* shaped like a JWT, like a Tessera-issued secret (`tsr_…`) or holding a PEM private
//!   key is replaced wherever it appears, whatever its name;
//! - private parameters of a JSON Web Key (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) are removed.
//!
//! Text that cannot be parsed (malformed JSON, plain text) is scanned for `name=value` and
//! `"name": value` pairs with sensitive names as well as for the value shapes above.

use serde_json::Value;
use std::borrow::Cow;

/// What a removed value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Sensitive words, matched against names folded to lower-case ASCII letters and digits
/// (so `client_secret`, `clientSecret` and `Client-Secret` all contain `secret`).
const SENSITIVE_WORDS: [&str; 9] = [
    "secret",
    "token",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "clientassertion",
    "privatekey",
    "apikey",
];

/// Bytes of folded text kept for matching: at least as long as the longest word searched for.
const WINDOW: usize = 16;

/// Words to find in folded text, prepared once: each word's bytes as an integer with its mask
/// and last byte, and which bytes end some word.
struct FoldedWords<const N: usize> {
    ends: [bool; 256],
    keys: [(u128, u128, u8); N],
}

/// Prepares words of at most [`WINDOW`] lower-case ASCII letters and digits.
const fn folded_words<const N: usize>(words: [&str; N]) -> FoldedWords<N> {
    let mut set = FoldedWords {
        ends: [false; 256],
        keys: [(0, 0, 0); N],
    };
    let mut i = 0;
    while i < N {
        let bytes = words[i].as_bytes();
        assert!(!bytes.is_empty() && bytes.len() <= WINDOW);
        let mut value = 0u128;
        let mut j = 0;
        while j < bytes.len() {
            assert!(bytes[j].is_ascii_lowercase() || bytes[j].is_ascii_digit());
            value = (value << 8) | bytes[j] as u128;
            j += 1;
        }
        let mask = if bytes.len() == WINDOW {
            u128::MAX
        } else {
            (1u128 << (8 * bytes.len())) - 1
        };
        let last = bytes[bytes.len() - 1];
        set.keys[i] = (value, mask, last);
        set.ends[last as usize] = true;
        i += 1;
    }
    set
}

static SENSITIVE: FoldedWords<{ SENSITIVE_WORDS.len() }> = folded_words(SENSITIVE_WORDS);

/// Whether `text`, folded to lower-case ASCII alphanumerics, contains one of `words`. Runs on
/// every logged header and body, so without allocating: the last [`WINDOW`] folded bytes live
/// in one integer, and words are compared only when the byte just read ends one of them.
fn folded_contains_any<const N: usize>(text: &str, words: &FoldedWords<N>) -> bool {
    let mut window: u128 = 0;
    for b in text.bytes() {
        if !b.is_ascii_alphanumeric() {
            continue;
        }
        let b = b.to_ascii_lowercase();
        window = (window << 8) | u128::from(b);
        if words.ends[b as usize]
            && words
                .keys
                .iter()
                .any(|&(value, mask, last)| last == b && window & mask == value)
        {
            return true;
        }
    }
    false
}

/// Whether a header, parameter or key name carries a secret.
pub fn is_sensitive_name(name: &str) -> bool {
    folded_contains_any(name, &SENSITIVE)
}

/// A cheap, conservative test: `false` only when `text` certainly holds nothing to redact, so
/// the common body or path skips parsing. Anything that could hide a sensitive name (escapes,
/// percent-encoding) or a key (`kty`, PEM, JWT, Tessera secret shapes) takes the full path.
fn may_hold_secret(text: &str) -> bool {
    const MARKERS: [&str; 5] = ["eyJ", "tsr_", "PRIVATE KEY", "%", "kty"];
    MARKERS.iter().any(|m| text.contains(m))
        || hides_letters_in_escapes(text)
        || folded_contains_any(text, &SENSITIVE)
}

/// Whether a JSON escape could hide a letter of a name from folding: `\u0073` is an `s`, and
/// `pass\tword` folds to `passtword` raw but to `password` decoded. A backslash before anything
/// but a letter or digit (`\"`, `\\`, `\/`, as in every SCIM `"W/\"3\""` version) escapes a
/// character that folding drops either way.
fn hides_letters_in_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(next) if next.is_ascii_alphanumeric() => return true,
            // The escaped character, `\\` included, is passed over with its backslash.
            _ => i += 2,
        }
    }
    false
}

/// Whether a value as a whole must never be logged, whatever its name.
pub fn is_sensitive_value(value: &str) -> bool {
    let v = value.trim();
    contains_secret_shape(v)
}

fn contains_secret_shape(text: &str) -> bool {
    text.contains("PRIVATE KEY-----") || find_token(text, 0).is_some()
}

/// Redacts one header value.
pub fn redact_header<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if is_sensitive_name(name) || is_sensitive_value(value) {
        Cow::Borrowed(REDACTED)
    } else if may_hold_secret(value) {
        // e.g. `Referer: https://app/cb?access_token=…`: a URL's query is decoded and checked
        // pair by pair, like the request's own.
        Cow::Owned(if value.contains('?') {
            redact_path_and_query(value)
        } else {
            redact_text(value)
        })
    } else {
        Cow::Borrowed(value)
    }
}

/// Redacts a `path?query` string: sensitive query values are replaced, the path is scanned for
/// secret-shaped segments.
pub fn redact_path_and_query(path_and_query: &str) -> String {
    match path_and_query.split_once('?') {
        Some((path, query)) => format!("{}?{}", redact_text(path), redact_form(query)),
        None => redact_text(path_and_query),
    }
}

/// Redacts `application/x-www-form-urlencoded` text (also query strings).
pub fn redact_form(form: &str) -> String {
    if !may_hold_secret(form) {
        return form.to_owned();
    }
    form.split('&')
        .map(|pair| {
            let Some((raw_name, raw_value)) = pair.split_once('=') else {
                // A bare value (`?eyJ…`).
                return if is_sensitive_value(&percent_decode(pair)) {
                    REDACTED.to_owned()
                } else {
                    pair.to_owned()
                };
            };
            let name = percent_decode(raw_name);
            let value = percent_decode(raw_value);
            if is_sensitive_name(&name) || is_sensitive_value(&value) {
                format!("{raw_name}={REDACTED}")
            } else if may_hold_secret(&value) {
                format!("{raw_name}={}", redact_text(&value))
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Redacts a JSON value in place.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is_jwk = map.contains_key("kty");
            // A SCIM PATCH operation names the attribute in `path` and carries it in `value`:
            // `{"op":"replace","path":"password","value":"…"}`.
            let sensitive_path = map.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("path") && v.as_str().is_some_and(is_sensitive_name)
            });
            for (key, v) in map.iter_mut() {
                let jwk_private = is_jwk
                    && matches!(
                        key.as_str(),
                        "d" | "p" | "q" | "dp" | "dq" | "qi" | "k" | "oth"
                    );
                let patched_secret = sensitive_path && key.eq_ignore_ascii_case("value");
                if is_sensitive_name(key) || jwk_private || patched_secret {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::String(s) if may_hold_secret(s) => *s = redact_text(s),
        _ => {}
    }
}

/// Redacts a body for storage, choosing the method from its content type.
///
/// The result never contains NUL (PostgreSQL rejects it in text columns): each becomes U+FFFD.
pub fn redact_body(content_type: Option<&str>, body: &[u8]) -> String {
    let redacted = redact_body_text(content_type, body);
    if redacted.contains('\0') {
        redacted.replace('\0', "\u{fffd}")
    } else {
        redacted
    }
}

fn redact_body_text(content_type: Option<&str>, body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else {
        return format!("[binary body, {} bytes]", body.len());
    };
    if !may_hold_secret(text) {
        return text.to_owned();
    }
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime.starts_with("multipart/") {
        // Part names sit in part headers this redactor does not parse: keep nothing.
        return format!("[multipart body, {} bytes]", body.len());
    }
    // JSON is parsed whatever the declared type, so a key is found by name wherever it sits.
    let looks_json = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
    if mime.ends_with("json") || mime.ends_with("+json") || looks_json {
        if let Ok(mut value) = serde_json::from_str::<Value>(text) {
            redact_json(&mut value);
            return value.to_string();
        }
    } else if mime == "application/x-www-form-urlencoded" {
        return redact_form(text.trim_end());
    }
    redact_text(text)
}

/// Redacts free text: sensitive `name=value` / `"name": "value"` pairs, PEM private keys,
/// JWT-shaped and Tessera-secret-shaped values.
pub fn redact_text(text: &str) -> String {
    if !may_hold_secret(text) {
        return text.to_owned();
    }
    let text = redact_pem_blocks(text);
    let text = redact_named_values(&text);
    redact_token_shapes(&text)
}

fn redact_pem_blocks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN") {
        let header_end = rest[start..]
            .find("-----\n")
            .or_else(|| rest[start + 10..].find("-----").map(|i| i + 10));
        let is_private = header_end
            .map(|e| rest[start..start + e].contains("PRIVATE KEY"))
            .unwrap_or(false);
        if !is_private {
            out.push_str(&rest[..start + 10]);
            rest = &rest[start + 10..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(REDACTED);
        // Skip to the end marker if there is one, otherwise everything that follows is key.
        match rest[start..].find("-----END") {
            Some(end) => {
                let after_end = &rest[start + end + 8..];
                let close = after_end
                    .find("-----")
                    .map(|i| i + 5)
                    .unwrap_or(after_end.len());
                rest = &after_end[close..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Finds each word with a sensitive name followed by `=` or `:` and replaces the value after it.
fn redact_named_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        if !is_name_char(c) {
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let word_end = text[i..]
            .find(|ch: char| !is_name_char(ch))
            .map_or(text.len(), |e| i + e);
        let word = &text[i..word_end];
        out.push_str(word);
        i = word_end;
        if !is_sensitive_name(word) {
            continue;
        }
        // Optional closing quote of a JSON key, spaces, then the separator.
        let mut j = i;
        if j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
            j += 1;
        }
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j >= bytes.len() || !(bytes[j] == b'=' || bytes[j] == b':') {
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        out.push_str(&text[i..j]);
        let (value_end, quoted) = match bytes.get(j) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let close = text[j + 1..]
                    .find(q as char)
                    .map_or(text.len(), |e| j + 1 + e);
                out.push(q as char);
                (close, true)
            }
            _ => (
                text[j..]
                    .find(|ch: char| {
                        ch.is_whitespace() || matches!(ch, '&' | ',' | ';' | '}' | ']')
                    })
                    .map_or(text.len(), |e| j + e),
                false,
            ),
        };
        let value_start = if quoted { j + 1 } else { j };
        let value = &text[value_start..value_end];
        out.push_str(REDACTED);
        i = value_end;
        // `Authorization: Bearer <token>`: the scheme is not the secret, the word after it is.
        if !quoted
            && matches!(
                value.to_ascii_lowercase().as_str(),
                "bearer" | "basic" | "digest"
            )
        {
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            i = text[i..]
                .find(|ch: char| ch.is_whitespace() || matches!(ch, '&' | ',' | ';' | '}' | ']'))
                .map_or(text.len(), |e| i + e);
        }
    }
    out
}

fn is_word_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'='
}

/// The next JWT- or Tessera-secret-shaped run of characters at or after `from`.
fn find_token(text: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut search = from;
    loop {
        let jwt = text[search..].find("eyJ").map(|i| search + i);
        let ours = text[search..].find("tsr_").map(|i| search + i);
        let start = match (jwt, ours) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        let mut end = start;
        while end < bytes.len() && is_token_char(bytes[end]) {
            end += 1;
        }
        let candidate = &text[start..end];
        // `=` belongs to a token's padding but also separates a name from its value
        // (`access_token=eyJ…`), so only a letter, digit, `-`, `_` or `.` before it joins words.
        let starts_word = start == 0 || !is_word_char(bytes[start - 1]);
        if starts_word && (looks_like_jwt(candidate) || looks_like_tessera_secret(candidate)) {
            return Some((start, end));
        }
        search = start + 3;
    }
}

/// A compact JWS or JWE: three or five base64url segments, the first a JSON header (`eyJ`).
pub fn looks_like_jwt(s: &str) -> bool {
    let s = s.trim_end_matches('=');
    let parts: Vec<&str> = s.split('.').collect();
    (parts.len() == 3 || parts.len() == 5)
        && parts[0].starts_with("eyJ")
        && parts[0].len() >= 10
        // A JWE with direct encryption has an empty second part (no encrypted key).
        && (parts[1].len() >= 2 || (parts.len() == 5 && parts[2].len() >= 2))
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn looks_like_tessera_secret(s: &str) -> bool {
    s.starts_with("tsr_") && s.len() >= 24
}

fn redact_token_shapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some((start, end)) = find_token(text, pos) {
        out.push_str(&text[pos..start]);
        out.push_str(REDACTED);
        pos = end;
    }
    out.push_str(&text[pos..]);
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

    #[test]
    fn sensitive_names() {
        for n in [
            "Authorization",
            "cookie",
            "Set-Cookie",
            "client_secret",
            "clientSecret",
            "client_assertion",
            "password",
            "X-Api-Key",
            "refresh_token",
            "private_key",
            "privateKey",
        ] {
            assert!(is_sensitive_name(n), "{n}");
        }
        for n in [
            "userName",
            "displayName",
            "content-type",
            "grant_type",
            "keyId",
        ] {
            assert!(!is_sensitive_name(n), "{n}");
        }
    }

    #[test]
    fn headers() {
        assert_eq!(redact_header("authorization", "Bearer abc"), REDACTED);
        assert_eq!(
            redact_header("x-custom", &format!("Bearer {JWT}")),
            REDACTED
        );
        assert_eq!(
            redact_header("accept", "application/json"),
            "application/json"
        );
    }

    #[test]
    fn query_strings() {
        let q = "/x?filter=userName%20eq%20%22a%22&access_token=abc&client%5Fsecret=s3&id_hint="
            .to_owned()
            + JWT;
        let r = redact_path_and_query(&q);
        assert!(
            !r.contains("abc") && !r.contains("s3") && !r.contains(JWT),
            "{r}"
        );
        assert!(r.contains("filter=userName%20eq%20%22a%22"));
        assert_eq!(redact_path_and_query("/healthz"), "/healthz");
    }

    #[test]
    fn json_bodies() {
        let mut v = json!({
            "userName": "alice",
            "password": "hunter2",
            "nested": {"clientSecret": {"value": "x"}, "list": [{"api_key": "k1"}, JWT]},
            "jwk": {"kty": "RSA", "n": "public", "d": "private-exponent"},
            "pem": "-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----",
            "note": format!("here is tsr_adm_{} inline", "A".repeat(43)),
        });
        redact_json(&mut v);
        let s = v.to_string();
        for secret in [
            "hunter2",
            "\"x\"",
            "k1",
            JWT,
            "private-exponent",
            "MIIEv",
            "AAAAAAAAAA",
        ] {
            assert!(!s.contains(secret), "{secret} left in {s}");
        }
        assert!(s.contains("alice") && s.contains("public") && s.contains("inline"));
    }

    #[test]
    fn malformed_and_text_bodies() {
        let text = r#"{"password": "hunter2", "client_secret":"s3cr3t", broken"#;
        let r = redact_body(Some("application/json"), text.as_bytes());
        assert!(!r.contains("hunter2") && !r.contains("s3cr3t"), "{r}");
        let r = redact_text("Authorization: Bearer opaque123 next=1");
        assert!(!r.contains("opaque123") && r.contains("next=1"), "{r}");
        let r = redact_text("token=abc&x=1");
        assert_eq!(r, format!("token={REDACTED}&x=1"));
        let r = redact_text(
            "-----BEGIN RSA PRIVATE KEY-----\nAAA\n-----END RSA PRIVATE KEY-----\nafter",
        );
        assert_eq!(r, format!("{REDACTED}\nafter"));
        let cert = "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----";
        assert_eq!(redact_text(cert), cert);
    }

    #[test]
    fn form_bodies() {
        let body = format!(
            "grant_type=client_credentials&client_id=abc&client_secret=s3&client_assertion={JWT}"
        );
        let r = redact_body(Some("application/x-www-form-urlencoded"), body.as_bytes());
        assert!(r.contains("client_id=abc") && r.contains("grant_type=client_credentials"));
        assert!(!r.contains("s3") && !r.contains(JWT), "{r}");
    }

    #[test]
    fn binary_bodies_are_not_stored() {
        assert_eq!(redact_body(None, &[0xff, 0xfe]), "[binary body, 2 bytes]");
    }

    #[test]
    fn the_prefilter_only_skips_text_without_anything_to_redact() {
        for plain in [
            "",
            "/healthz",
            r#"{"status":"ok"}"#,
            r#"{"userName":"alice","emails":[]}"#,
            // Escapes of characters that folding drops anyway, as in every SCIM `meta.version`.
            r#"{"meta":{"version":"W/\"3\""},"path":"a\\b\/c"}"#,
        ] {
            assert!(!may_hold_secret(plain), "{plain}");
            assert_eq!(
                redact_body(Some("application/json"), plain.as_bytes()),
                plain
            );
        }
        for risky in [
            r#"{"Pass-Word":"x"}"#,
            r#"{"pass\u0077ord":"x"}"#,
            r#"{"pass\tword":"x"}"#,
            r#"{"x":"\\","y":"\n"}"#,
            "client%5Fsecret=x",
            r#"{"kty":"oct","k":"x"}"#,
            "tsr_adm_xyz",
            "xeyJhbGciOiJ",
            "API_KEY: 1",
        ] {
            assert!(may_hold_secret(risky), "{risky}");
        }
        // The escaped key is still redacted once the slow path decodes it.
        let r = redact_body(Some("application/json"), br#"{"pass\u0077ord":"hunter2"}"#);
        assert!(!r.contains("hunter2"), "{r}");
        let r = redact_body(Some("application/json"), br#"{"kty":"oct","k":"c2VjcmV0"}"#);
        assert!(!r.contains("c2VjcmV0"), "{r}");
        for hidden in [
            br#"{"pass\tword":"hunter2"}"#.as_slice(),
            br#"{"path":"pass\nword","value":"hunter2"}"#,
        ] {
            let r = redact_body(Some("application/json"), hidden);
            assert!(!r.contains("hunter2"), "{r}");
        }
        let r = redact_body(Some("text/plain"), br#"{"kty":"oct","k":"c2VjcmV0"}"#);
        assert!(
            !r.contains("c2VjcmV0"),
            "JSON is recognised without its content type: {r}"
        );
        let r = redact_header("referer", "https://app/cb?pass%77ord=hunter2&x=1");
        assert!(!r.contains("hunter2") && r.contains("x=1"), "{r}");
    }

    #[test]
    fn long_names_are_folded_across_the_window() {
        assert!(is_sensitive_name(
            "x-very-long-prefix-that-is-longer-than-the-window-client-assertion-type"
        ));
        assert!(!is_sensitive_name(
            "x-very-long-prefix-that-is-longer-than-the-window-harmless"
        ));
    }

    #[test]
    fn values_after_an_equals_sign_and_in_headers_are_found() {
        let referer = format!("https://app/cb?access_token={JWT}&x=1");
        let r = redact_header("referer", &referer);
        assert!(!r.contains(JWT), "{r}");
        let r = redact_header("referer", "https://app/cb?access_token=opaque-123&x=1");
        assert!(!r.contains("opaque-123") && r.contains("x=1"), "{r}");
        let r = redact_text(&format!("#id_token={JWT}"));
        assert!(!r.contains(JWT), "{r}");
        let mut v = json!({"redirect_uri": format!("https://app/#access_token={JWT}")});
        redact_json(&mut v);
        assert!(!v.to_string().contains(JWT), "{v}");
        let r = redact_path_and_query(&format!("/x?{JWT}&y=2"));
        assert!(!r.contains(JWT) && r.contains("y=2"), "{r}");
        let r = redact_path_and_query("/cb?next=%2Fhome%3Ftoken%3Dabc");
        assert!(!r.contains("abc"), "{r}");
    }

    #[test]
    fn scim_patch_values_of_sensitive_paths_are_removed() {
        let mut v = json!({"Operations": [
            {"op": "replace", "path": "password", "value": "hunter2"},
            {"op": "replace", "path": "displayName", "value": "Alice"}
        ]});
        redact_json(&mut v);
        let s = v.to_string();
        assert!(!s.contains("hunter2") && s.contains("Alice"), "{s}");
    }

    #[test]
    fn multipart_nul_and_direct_jwe() {
        let body =
            b"--b\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2\r\n--b--";
        let r = redact_body(Some("multipart/form-data; boundary=b"), body);
        assert!(!r.contains("hunter2"), "{r}");
        assert_eq!(redact_body(Some("text/plain"), b"a\0b"), "a\u{fffd}b");
        let jwe = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXZpdml2aXZp.Y2lwaGVydGV4dA.dGFndGFn";
        assert!(looks_like_jwt(jwe));
        assert_eq!(redact_text(jwe), REDACTED);
    }

    #[test]
    fn jwt_shapes() {
        assert!(looks_like_jwt(JWT));
        assert!(!looks_like_jwt("eyJhbGciOiJSUzI1NiJ9"));
        assert!(!looks_like_jwt("a.b.c"));
        assert_eq!(
            redact_text(&format!("x {JWT} y")),
            format!("x {REDACTED} y")
        );
    }
}
