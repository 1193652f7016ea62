//! The DATA phase's byte stream (RFC 5321 §4.1.1.4, §4.5.2): where the
//! message ends and what its dot-stuffed lines were.
//!
//! Owns: the end-of-data rule and dot-unstuffing, sans-IO. Must not touch:
//! the session's other states (see `session`).
//!
//! Written here rather than taken from smtp-proto's `DataReceiver`, which
//! also ends the data at `CRLF "." CR CR LF` (any CRs before the LF): a
//! reader that finds the end where the sending relay did not is what SMTP
//! smuggling feeds on (the rest of the "message" read as commands, a
//! forged second message accepted). Only `CRLF "." CRLF` ends it here;
//! bare LFs never take part in it.

/// Where the reader is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Just after a CRLF (the DATA command's own counts): a "." here is
    /// a stuffed dot or the start of the terminator.
    LineStart,
    /// Inside a line.
    Body,
    /// After a CR inside a line.
    Cr,
    /// After the "." that began a line (not kept).
    Dot,
    /// After "." CR at the start of a line (the CR held back).
    DotCr,
}

/// Reads one message's DATA bytes into a buffer, unstuffed.
#[derive(Debug, Clone)]
pub struct DataReader {
    at: At,
}

impl Default for DataReader {
    fn default() -> Self {
        DataReader { at: At::LineStart }
    }
}

impl DataReader {
    /// Take bytes from `input` into `buf` (the message with each line's
    /// first dot removed, its last CRLF kept, the terminator not). Returns
    /// how many bytes of `input` were consumed when the terminator ended
    /// the message (the rest belongs to what follows it); None when all of
    /// `input` was taken and the message goes on.
    pub fn ingest(&mut self, input: &[u8], buf: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.at == At::Body {
                // The bulk of a message: copied up to the next CR at once.
                match input[i..].iter().position(|&b| b == b'\r') {
                    Some(p) => {
                        buf.extend_from_slice(&input[i..=i + p]);
                        i += p + 1;
                        self.at = At::Cr;
                    }
                    None => {
                        buf.extend_from_slice(&input[i..]);
                        return None;
                    }
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.at = match (self.at, b) {
                (At::LineStart, b'.') => At::Dot,
                (At::Dot, b'\r') => At::DotCr,
                (At::DotCr, b'\n') => {
                    self.at = At::LineStart;
                    return Some(i);
                }
                (At::DotCr, _) => {
                    // Not the terminator: the held CR is data, and this
                    // byte is read as the one after a CR.
                    buf.push(b'\r');
                    i -= 1;
                    At::Cr
                }
                (_, b'\r') => {
                    buf.push(b);
                    At::Cr
                }
                (At::Cr, b'\n') => {
                    buf.push(b);
                    At::LineStart
                }
                _ => {
                    buf.push(b);
                    At::Body
                }
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and what follows it, fed whole and byte by byte.
    fn read(input: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        let whole = {
            let mut buf = Vec::new();
            let end = DataReader::default().ingest(input, &mut buf);
            (buf, end.map(|n| input[n..].to_vec()))
        };
        let mut r = DataReader::default();
        let mut buf = Vec::new();
        let mut rest = None;
        for (i, b) in input.iter().enumerate() {
            if r.ingest(std::slice::from_ref(b), &mut buf).is_some() {
                rest = Some(input[i + 1..].to_vec());
                break;
            }
        }
        assert_eq!(whole, (buf.clone(), rest.clone()), "split reads agree");
        (buf, rest)
    }

    #[test]
    fn the_terminator_ends_the_message_and_dots_are_unstuffed() {
        let (m, rest) = read(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(m, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
        assert_eq!(rest.as_deref(), Some(&b"QUIT\r\n"[..]));
        // An empty message; a first line that was stuffed.
        assert_eq!(read(b".\r\n"), (Vec::new(), Some(Vec::new())));
        assert_eq!(read(b"..x\r\n.\r\n").0, b".x\r\n");
    }

    #[test]
    fn only_crlf_dot_crlf_ends_it() {
        for not_an_end in [
            &b"a\r\n.\r\r\nMAIL FROM:<x@y>\r\n"[..],
            b"a\r\n.\r\r\r\nx\r\n",
            b"a\n.\r\nx\r\n",
            b"a\r\n.\nx\r\n",
            b"a\r.\r\nx\r\n",
            b"a\r\n.x\r\n",
        ] {
            let (m, rest) = read(not_an_end);
            assert_eq!(rest, None, "{:?}", String::from_utf8_lossy(not_an_end));
            assert!(m.starts_with(b"a"));
        }
        // What a stuffed ".\r\r\n" line becomes: its content, unstuffed.
        let (m, rest) = read(b"a\r\n.\r\r\nb\r\n.\r\n");
        assert_eq!(m, b"a\r\n\r\r\nb\r\n");
        assert_eq!(rest.as_deref(), Some(&b""[..]));
    }
}
