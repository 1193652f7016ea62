//! The Italian *codice fiscale* of a natural person (DM 23/12/1976, DPR
//! 605/1973): 16 characters — surname (3 letters), name (3), year (2),
//! month (1 letter), day (2; women + 40), municipality code (1 letter + 3
//! digits), check character. Homocodes (*omocodia*) replace digits with
//! letters `LMNPQRSTUV`, from the right.
//!
//! Owns: validation with an error that names what is wrong, and the decoded
//! parts (birth date, sex, municipality code) the anagrafica can show.

/// What a valid code says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxCode {
    /// Upper case, as written (homocode letters kept).
    pub code: String,
    /// Two-digit year, month 1–12, day 1–31.
    pub birth: (u8, u8, u8),
    pub female: bool,
    /// Belfiore code of the municipality (or `Z…` for a foreign country),
    /// homocode letters turned back into digits.
    pub municipality: String,
}

/// Why a code is not valid; the message names the position (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxCodeError {
    #[error("a codice fiscale has 16 characters, this has {0}")]
    Length(usize),
    #[error("character {pos} ({found:?}) must be a letter")]
    NotLetter { pos: usize, found: char },
    #[error("character {pos} ({found:?}) must be a digit or a homocode letter (LMNPQRSTUV)")]
    NotDigit { pos: usize, found: char },
    #[error("character 9 ({0:?}) is not a month letter (ABCDEHLMPRST)")]
    Month(char),
    #[error("characters 10-11 ({0}) are not a day (01-31, or 41-71 for women)")]
    Day(u8),
    #[error("day {day} does not exist in month {month}")]
    Date { day: u8, month: u8 },
    #[error("the check character is {found:?}, the code's characters give {expected:?}")]
    Check { found: char, expected: char },
}

const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";
const HOMOCODE: &[u8; 10] = b"LMNPQRSTUV";
/// Values of characters in odd (1-based) positions, for 0–9 and A–Z alike.
const ODD: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];
/// Positions (0-based) holding digits, or their homocode letters.
const DIGITS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        _ => HOMOCODE.iter().position(|h| *h == c).map(|p| p as u8),
    }
}

/// The check character of the first 15 characters (upper case).
pub fn check_char(first15: &[u8]) -> char {
    let sum: u32 = first15
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let idx = if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'A'
            } as usize;
            if i % 2 == 0 { ODD[idx] } else { idx as u32 }
        })
        .sum();
    (b'A' + (sum % 26) as u8) as char
}

/// Validate a codice fiscale (case and surrounding spaces ignored).
pub fn parse(input: &str) -> Result<TaxCode, TaxCodeError> {
    let code = input.trim().to_ascii_uppercase();
    let chars: Vec<char> = code.chars().collect();
    if chars.len() != 16 || !code.is_ascii() {
        return Err(TaxCodeError::Length(chars.len()));
    }
    let b = code.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let pos = i + 1;
        if DIGITS.contains(&i) {
            if digit(c).is_none() {
                return Err(TaxCodeError::NotDigit {
                    pos,
                    found: c as char,
                });
            }
        } else if !c.is_ascii_uppercase() {
            return Err(TaxCodeError::NotLetter {
                pos,
                found: c as char,
            });
        }
    }
    let num = |i: usize| digit(b[i]).unwrap_or(0);
    let month = MONTHS
        .iter()
        .position(|m| *m == b[8])
        .ok_or(TaxCodeError::Month(b[8] as char))? as u8
        + 1;
    let raw_day = num(9) * 10 + num(10);
    let (day, female) = match raw_day {
        1..=31 => (raw_day, false),
        41..=71 => (raw_day - 40, true),
        d => return Err(TaxCodeError::Day(d)),
    };
    // 29 February is accepted whatever the two-digit year (the century is
    // not in the code).
    let days_in_month = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
    if day > days_in_month {
        return Err(TaxCodeError::Date { day, month });
    }
    let expected = check_char(&b[..15]);
    if b[15] as char != expected {
        return Err(TaxCodeError::Check {
            found: b[15] as char,
            expected,
        });
    }
    Ok(TaxCode {
        birth: (num(6) * 10 + num(7), month, day),
        female,
        municipality: format!("{}{}{}{}", b[11] as char, num(12), num(13), num(14)),
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_are_valid() {
        // The Agenzia delle Entrate's own example, and a woman's code.
        let c = parse("RSSMRA85T10A562S").unwrap();
        assert_eq!(c.birth, (85, 12, 10));
        assert!(!c.female);
        assert_eq!(c.municipality, "A562");
        let w = parse("bnclcu80a41h501u").unwrap();
        assert!(w.female);
        assert_eq!(w.birth, (80, 1, 1));
        assert_eq!(w.municipality, "H501");
    }

    #[test]
    fn homocodes_are_valid_and_decode() {
        // RSSMRA85T10A562S with its last digit 2 → N, check recomputed.
        let mut s = b"RSSMRA85T10A56N".to_vec();
        let check = check_char(&s);
        s.push(check as u8);
        let c = parse(std::str::from_utf8(&s).unwrap()).unwrap();
        assert_eq!(c.municipality, "A562");
    }

    #[test]
    fn every_error_names_what_is_wrong() {
        assert_eq!(parse("RSSMRA85T10A562"), Err(TaxCodeError::Length(15)));
        assert_eq!(
            parse("R5SMRA85T10A562S"),
            Err(TaxCodeError::NotLetter { pos: 2, found: '5' })
        );
        assert_eq!(
            parse("RSSMRA8AT10A562S"),
            Err(TaxCodeError::NotDigit { pos: 8, found: 'A' })
        );
        assert_eq!(parse("RSSMRA85F10A562S"), Err(TaxCodeError::Month('F')));
        assert_eq!(parse("RSSMRA85T35A562S"), Err(TaxCodeError::Day(35)));
        let mut feb30 = b"RSSMRA85B30A562".to_vec();
        feb30.push(check_char(&feb30) as u8);
        assert_eq!(
            parse(std::str::from_utf8(&feb30).unwrap()),
            Err(TaxCodeError::Date { day: 30, month: 2 })
        );
        assert_eq!(
            parse("RSSMRA85T10A562X"),
            Err(TaxCodeError::Check {
                found: 'X',
                expected: 'S'
            })
        );
        assert!(parse("RSSMRA85T10A562S").is_ok());
        assert!(parse("RSSMRA85T10A562È").is_err());
    }
}
