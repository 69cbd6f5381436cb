//! Text mode's escaping: people read these lines at terminals, so nothing a
//! peer sends may act instead of showing itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` acts rather than shows itself, so text mode escapes it and a
/// name may not contain it: C0 controls (ESC, BEL, CR, LF, TAB...), DEL and
/// C1 controls (U+0080-U+009F, U+009B is a CSI to some terminals); bidi
/// controls, which reorder what a reader sees (U+202A-U+202E embeddings and
/// overrides, U+2066-U+2069 isolates, U+200E/U+200F and U+061C marks); and the
/// line and paragraph separators U+2028/U+2029, which break lines.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` with every unprintable character (`is_unprintable`) written as an
/// escape: `\n`, `\r`, `\t`; `\xHH` for the other ASCII controls (ESC is
/// `\x1b`, DEL `\x7f`); `\u{H..}` for the rest (`\u{9b}`, `\u{202e}`).
///
/// A reader (or a program) can always tell an escape from text that looks
/// like one: a backslash the peer sent is doubled when what follows it would
/// otherwise read as an escape (`\`, `n`, `r`, `t`, `x`, `u`, or an escaped
/// character). So the rule to read a line back is: `\\` is one backslash,
/// `\n \r \t \xHH \u{H..}` are the characters they name, and a backslash
/// before anything else is itself. A lone backslash (`¯\_(ツ)_/¯`, `C:\Temp`)
/// stays single, because people read these lines.
pub fn escape_unprintable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unprintable(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let looks_escaped = chars.peek().is_some_and(|&next| {
                    matches!(next, '\\' | 'n' | 'r' | 't' | 'x' | 'u') || is_unprintable(next)
                });
                out.push_str(if looks_escaped { r"\\" } else { r"\" });
            }
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if is_unprintable(c) => {
                let code = u32::from(c);
                // Writing into a String cannot fail.
                let _ = if c.is_ascii() {
                    write!(out, r"\x{code:02x}")
                } else {
                    write!(out, r"\u{{{code:x}}}")
                };
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}
