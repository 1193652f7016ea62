//! Time-based one-time passwords (RFC 6238, HMAC-SHA1, 6 digits, 30 s
//! steps): the optional second factor of the Ordini panel login.
//!
//! Owns: secret generation, base32 (RFC 4648, no padding, as authenticator
//! apps expect in `otpauth://` URIs), code computation and checking.
//! Must not touch: storage or HTTP (pure, but for the RNG).

/// Steps of tolerance either side of now: authenticator clocks drift.
const SKEW_STEPS: i64 = 1;
const STEP_SECONDS: i64 = 30;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A fresh 160-bit secret, base32 (RFC 4226 §4 recommends 160 bits).
pub fn new_secret() -> String {
    let mut b = [0u8; 20];
    // Without a seeded RNG nothing secret can be made; an all-zero secret
    // would be guessable, so the caller gets an empty one, refused below.
    if openssl::rand::rand_bytes(&mut b).is_err() {
        return String::new();
    }
    base32(&b)
}

pub fn base32(data: &[u8]) -> String {
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !matches!(c, b' ' | b'=')) {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// The code for time step `counter` (RFC 4226 §5.3 dynamic truncation).
pub fn code_at(key: &[u8], counter: u64, digits: u32) -> Option<u32> {
    let pkey = openssl::pkey::PKey::hmac(key).ok()?;
    let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &pkey).ok()?;
    s.update(&counter.to_be_bytes()).ok()?;
    let mac = s.sign_to_vec().ok()?;
    let off = (mac.last()? & 0x0f) as usize;
    let bin = u32::from_be_bytes([mac[off] & 0x7f, mac[off + 1], mac[off + 2], mac[off + 3]]);
    Some(bin % 10u32.pow(digits))
}

/// Whether `code` is right for `secret` at unix time `now` (± one step).
pub fn check(secret: &str, code: &str, now: i64) -> bool {
    matched_step(secret, code, now).is_some()
}

/// The time step `code` is valid for (within the tolerated skew), if any:
/// a login remembers it, so that a code once used is never taken again
/// (RFC 6238 §5.2).
pub fn matched_step(secret: &str, code: &str, now: i64) -> Option<i64> {
    let code = code.trim();
    let key = base32_decode(secret).filter(|k| !k.is_empty())?;
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let given = code.parse::<u32>().ok()?;
    (-SKEW_STEPS..=SKEW_STEPS)
        .map(|d| now / STEP_SECONDS + d)
        .find(|&t| t >= 0 && code_at(&key, t as u64, 6) == Some(given))
}

/// The current code (for tests and for the enrolment page's self-check).
pub fn current(secret: &str, now: i64) -> Option<String> {
    let key = base32_decode(secret)?;
    code_at(&key, (now / STEP_SECONDS) as u64, 6).map(|c| format!("{c:06}"))
}

/// The URI authenticator apps read (as a QR code or typed in).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    let enc = crate::admin::path_segment;
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 Appendix B, SHA1 key "12345678901234567890", 8 digits.
    #[test]
    fn rfc6238_vectors() {
        let key = b"12345678901234567890";
        for (t, want) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
        ] {
            assert_eq!(code_at(key, t / 30, 8), Some(want), "t={t}");
        }
    }

    #[test]
    fn base32_round_trip_and_rfc4648_vector() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI").as_deref(), Some(&b"foobar"[..]));
        let s = new_secret();
        assert_eq!(s.len(), 32);
        assert_eq!(base32_decode(&s).map(|k| k.len()), Some(20));
    }

    #[test]
    fn the_uri_escapes_the_label() {
        assert_eq!(
            otpauth_uri("pecd", "ordine a", "ABC"),
            "otpauth://totp/pecd:ordine%20a?secret=ABC&issuer=pecd&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn check_accepts_one_step_of_drift_and_nothing_else() {
        let s = base32(b"12345678901234567890");
        let now = 1_234_567_890;
        let code = current(&s, now).unwrap();
        assert!(check(&s, &code, now));
        assert!(check(&s, &code, now + 30));
        assert!(!check(&s, &code, now + 90));
        assert!(!check(&s, "12345", now));
        assert!(!check(&s, "abcdef", now));
        assert!(!check("", &code, now));
    }
}
