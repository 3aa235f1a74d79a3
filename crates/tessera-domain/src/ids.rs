//! Identifiers: UUIDv7 strings, which sort by creation time and index well on both backends.

/// A new UUIDv7, hyphenated lower-case.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Whether `s` is a well-formed UUID (any version), as accepted in paths.
pub fn is_valid_id(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids_and_sort_by_creation() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(is_valid_id(&a) && is_valid_id(&b));
        assert!(a < b, "{a} should sort before {b}");
        assert!(!is_valid_id("not-a-uuid"));
    }
}
