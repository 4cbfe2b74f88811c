//! The JSON writers of the `cli` feature's reports (check, bench, kv-plan, approx-report): each
//! report derives `serde::Serialize`, serde_json writes it. A NaN or an infinity (a row that did
//! not run) is written as `null`, which JSON has in place of them.

use serde::Serialize;

/// `value` as one line of JSON (a JSON Lines record).
pub(crate) fn to_line(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect(SERIALIZES)
}

/// `value` as indented JSON ending in a newline (a report file).
pub(crate) fn to_pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect(SERIALIZES) + "\n"
}

/// Why writing a report cannot fail: serde_json fails only on a map with non-string keys or a
/// `Serialize` implementation that returns an error, and the reports are derived structs of
/// strings, numbers, booleans, options and vectors.
const SERIALIZES: &str = "a derived report of plain fields always serializes";
