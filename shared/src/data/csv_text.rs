//! Text helpers for messages about CSV input: escaping bytes a terminal would not show, and finding the
//! first line with more fields than the header (polars' own message names no line).

/// `s` with control and other invisible characters written as `\x07` / `\u{200b}`, so that a message
/// shows exactly what the file holds.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_invisible(c) {
            if (c as u32) < 0x80 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Zero-width and formatting characters that print as nothing (a byte-order mark, a zero-width space).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// A line with more fields than the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaggedLine {
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
    pub fields: usize,
    pub header_fields: usize,
}

/// The first record of comma-separated `bytes` that has more fields than the first record (the header).
/// Quoted fields may hold commas and line breaks (`""` is an escaped quote).
pub fn find_ragged_line(bytes: &[u8]) -> Option<RaggedLine> {
    let mut header_fields: Option<usize> = None;
    let (mut line, mut record_line) = (1usize, 1usize);
    let (mut fields, mut in_quotes, mut empty_record) = (1usize, false, true);
    let mut finish = |fields: usize, record_line: usize, empty: bool| -> Option<RaggedLine> {
        match header_fields {
            None => header_fields = Some(fields),
            Some(h) if fields > h && !empty => {
                return Some(RaggedLine {
                    line: record_line,
                    fields,
                    header_fields: h,
                })
            }
            Some(_) => {}
        }
        None
    };
    for &b in bytes {
        match b {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => fields += 1,
            b'\n' => {
                line += 1;
                if in_quotes {
                    continue;
                }
                if let Some(r) = finish(fields, record_line, empty_record) {
                    return Some(r);
                }
                (fields, empty_record, record_line) = (1, true, line);
                continue;
            }
            b'\r' => continue,
            _ => {}
        }
        empty_record = false;
    }
    if empty_record {
        return None;
    }
    finish(fields, record_line, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        assert_eq!(printable("op\u{1}en"), "op\\x01en");
        assert_eq!(printable("1\u{7}.5"), "1\\x07.5");
        assert_eq!(printable("\u{feff}date"), "\\u{feff}date");
        assert_eq!(printable("Zürich AG"), "Zürich AG");
    }

    #[test]
    fn the_first_line_with_too_many_fields_is_named() {
        let text = b"a,b,c\n1,2,3\n\"x,y\",2,3\n1,2,3,4\n1,2,3,4,5\n";
        assert_eq!(
            find_ragged_line(text),
            Some(RaggedLine {
                line: 4,
                fields: 4,
                header_fields: 3
            })
        );
    }

    #[test]
    fn quoted_line_breaks_short_lines_and_crlf_are_not_ragged() {
        assert_eq!(find_ragged_line(b"a,b\r\n\"1\n,2\",3\r\n4\n"), None);
        // the record that starts on line 2 spans two lines; the ragged one starts on line 4
        assert_eq!(
            find_ragged_line(b"a,b\n\"1\n,2\",3\n4,5,6").map(|r| r.line),
            Some(4)
        );
    }
}
