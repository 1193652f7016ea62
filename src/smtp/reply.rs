//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463).

use std::fmt;

/// One reply: code, enhanced status, one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `class.subject.detail`, e.g. `(5, 7, 1)`; None for 220/221/354/334.
    pub enhanced: Option<(u8, u16, u16)>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, 354, 334).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Wire form, CRLF terminated, multi-line with `-` continuations.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    // Named constructors for the replies every path uses.
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply::new(250, (2, 0, 0), text)
    }
    pub fn bad_sequence(text: impl Into<String>) -> Reply {
        Reply::new(503, (5, 5, 1), text)
    }
    pub fn syntax(text: impl Into<String>) -> Reply {
        Reply::new(501, (5, 5, 4), text)
    }
    pub fn unavailable(text: impl Into<String>) -> Reply {
        Reply::new(421, (4, 3, 0), text)
    }
    pub fn local_error(text: impl Into<String>) -> Reply {
        Reply::new(451, (4, 3, 0), text)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 < n { '-' } else { ' ' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            // A reply line never carries a bare CR or LF of its own, and
            // its text is ASCII (RFC 5321 §4.2: no SMTPUTF8 here): the
            // Italian of a non-acceptance loses its accents, not its words.
            let text: String = text.chars().map(ascii_fold).collect();
            match self.enhanced {
                Some((c, s, d)) => write!(f, "{}{sep}{c}.{s}.{d} {text}\r\n", self.code)?,
                None => write!(f, "{}{sep}{text}\r\n", self.code)?,
            }
        }
        Ok(())
    }
}

/// `c` as ASCII text: Italian (and common Latin) accented letters lose
/// their accent, control characters become spaces, anything else `?`.
fn ascii_fold(c: char) -> char {
    match c {
        ' '..='~' => c,
        c if c.is_control() => ' ',
        'à' | 'á' | 'â' | 'ä' => 'a',
        'À' | 'Á' | 'Â' | 'Ä' => 'A',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'È' | 'É' | 'Ê' | 'Ë' => 'E',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'Ì' | 'Í' | 'Î' | 'Ï' => 'I',
        'ò' | 'ó' | 'ô' | 'ö' => 'o',
        'Ò' | 'Ó' | 'Ô' | 'Ö' => 'O',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'Ù' | 'Ú' | 'Û' | 'Ü' => 'U',
        '’' | '‘' => '\'',
        _ => '?',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(Reply::ok("OK").to_string(), "250 2.0.0 OK\r\n");
        assert_eq!(Reply::plain(354, "go").to_string(), "354 go\r\n");
        let multi = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["host".into(), "PIPELINING".into()],
        };
        assert_eq!(multi.to_string(), "250-host\r\n250 PIPELINING\r\n");
        assert_eq!(Reply::syntax("a\r\nb").to_string(), "501 5.5.4 a  b\r\n");
        assert_eq!(
            Reply::new(550, (5, 7, 1), "più di un indirizzo — così").to_string(),
            "550 5.7.1 piu di un indirizzo ? cosi\r\n"
        );
    }
}
