//! The fingerprint of an error message: the message with what varies from
//! one occurrence to the next (numbers, ids, hex, quoted values) taken out,
//! so that "timeout after 30012 ms for todo 4f2a…" and "timeout after 29870
//! ms for todo 91bc…" are one error on the Errors page. Computed once, when
//! an event is stored, by both stores, so they group the same way.
//!
//! Rules, applied left to right:
//! - a quoted value (`'…'`, `"…"` or `` `…` ``, to its closing mark or the
//!   end) becomes `?`;
//! - a word (letters, digits and `_`, with `-`, `.` and `:` inside it) that
//!   holds a digit becomes `?`: numbers, UUIDs, hex ids, IP addresses,
//!   versions, `v2`;
//! - a list of `?` (`?, ?, ?`) becomes one `?`, so lists of ids of any
//!   length share a fingerprint;
//! - runs of whitespace become one space, and the ends are trimmed;
//! - at most [`MAX_FINGERPRINT_CHARS`] characters are kept.
//!
//! Words without digits stay as they are (`deadbeef` is a word), and so does
//! case. An empty message has an empty fingerprint.

/// Longest fingerprint kept, in characters.
pub const MAX_FINGERPRINT_CHARS: usize = 200;

/// The fingerprint of `message` (see the module doc).
pub fn error_fingerprint(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len().min(MAX_FINGERPRINT_CHARS * 4));
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '\'' | '"' | '`') {
            let close = chars[i + 1..].iter().position(|&d| d == c).map_or(chars.len(), |p| i + 1 + p + 1);
            placeholder(&mut out);
            i = close;
        } else if is_word(c) {
            let start = i;
            while i < chars.len()
                && (is_word(chars[i])
                    || (matches!(chars[i], '-' | '.' | ':') && chars.get(i + 1).is_some_and(|&n| is_word(n))))
            {
                i += 1;
            }
            let word = &chars[start..i];
            if word.iter().any(char::is_ascii_digit) {
                placeholder(&mut out);
            } else {
                out.extend(word);
            }
        } else if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
        if out.chars().count() > MAX_FINGERPRINT_CHARS * 2 {
            break;
        }
    }
    let trimmed = out.trim_end();
    trimmed.chars().take(MAX_FINGERPRINT_CHARS).collect()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Appends `?`, unless the text already ends in a list of them
/// (`?`, then only commas, semicolons and spaces).
fn placeholder(out: &mut String) {
    let tail = out.trim_end_matches([',', ';', ' ']);
    if tail.ends_with('?') {
        out.truncate(tail.len());
    } else {
        out.push('?');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occurrences_differing_in_numbers_and_ids_share_a_fingerprint() {
        let a = error_fingerprint("timeout after 30012 ms for todo 4f2a9c1e-0b7d-4c2e-9a55-1c2d3e4f5a6b");
        let b = error_fingerprint("timeout after 29870 ms for todo 91bc0d2f-aaaa-4bbb-8ccc-0123456789ab");
        assert_eq!(a, "timeout after ? ms for todo ?");
        assert_eq!(a, b);
    }

    #[test]
    fn quoted_values_hex_addresses_and_lists_are_taken_out() {
        assert_eq!(error_fingerprint("constraint \"todos_pkey\" violated by 'abc'"), "constraint ? violated by ?");
        assert_eq!(error_fingerprint("connect to 10.0.0.12:5432 failed (0x7f3a)"), "connect to ? failed (?)");
        assert_eq!(error_fingerprint("rows 1, 2, 3 rejected"), error_fingerprint("rows 17 rejected"));
        assert_eq!(error_fingerprint("unterminated 'quote"), "unterminated ?");
    }

    #[test]
    fn words_case_and_punctuation_stay_and_whitespace_collapses() {
        assert_eq!(error_fingerprint("  Server said:\n\tNOT  FOUND!  "), "Server said: NOT FOUND!");
        assert_eq!(error_fingerprint("deadbeef"), "deadbeef");
        assert_eq!(error_fingerprint(""), "");
        assert_eq!(error_fingerprint("http-client.pool exhausted"), "http-client.pool exhausted");
    }

    #[test]
    fn a_long_or_hostile_message_gives_a_bounded_fingerprint() {
        let long = "word ".repeat(10_000);
        assert_eq!(error_fingerprint(&long).chars().count(), MAX_FINGERPRINT_CHARS);
        let weird = "é\u{0}<script>\u{202e}".repeat(100);
        assert!(error_fingerprint(&weird).chars().count() <= MAX_FINGERPRINT_CHARS);
    }
}
