//! Ricevuta breve (RT §4): named parts become `<name>.hash` text parts holding
//! the SHA-1 of the part as transported; S/MIME originals per the rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pecd::pec::breve::hash_attachments;

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn attachment_replaced_by_sha1_of_its_base64_text() {
    let out = s(&hash_attachments(ORIGINAL));
    // sha1sum of the base64 line exactly as transported (computed with coreutils).
    assert!(out.contains("name=\"fattura.pdf.hash\""), "{out}");
    assert!(out.contains("filename=\"fattura.pdf.hash\""));
    assert!(
        out.contains("\r\n\r\n880e1375bdb9dfb05978f941d66f06890bc745c4\r\n--XYZ--"),
        "{out}"
    );
    assert!(!out.contains("JVBERi0x"));
    // The unnamed text part and the headers are untouched.
    assert!(out.contains("Buongiorno, in allegato la fattura."));
    assert!(out.starts_with("Received: from client.example"));
}

#[test]
fn sogei_envelope_original_has_both_xml_attachments_hashed() {
    let env = read(&samples().join("pec/07-sogei-sdi-2018-busta-trasporto-breve.eml"));
    let postacert = part_named(&env, "postacert.eml").unwrap();
    let out = hash_attachments(&pecd::pec::mime::to_crlf(&postacert));
    let msg = mail_parser::MessageParser::default().parse(&out).unwrap();
    use mail_parser::MimeHeaders;
    let hashes: Vec<(String, String)> = msg
        .parts
        .iter()
        .filter_map(|p| {
            let n = p.attachment_name()?;
            n.ends_with(".hash").then(|| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(p.contents()).trim().to_string(),
                )
            })
        })
        .collect();
    assert_eq!(hashes.len(), 2, "{hashes:?}");
    for (name, h) in &hashes {
        assert!(
            name.ends_with(".xml.hash") || name.ends_with(".p7m.hash"),
            "{name}"
        );
        assert_eq!(h.len(), 40);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}

#[test]
fn signed_original_keeps_its_signature_part() {
    let orig = b"From: a@pec.provider-a.test\r\nTo: b@pec.provider-b.test\r\nSubject: firmato\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"S\"\r\n\r\n\
--S\r\nContent-Type: multipart/mixed; boundary=\"M\"\r\n\r\n\
--M\r\nContent-Type: text/plain\r\n\r\ntesto\r\n\
--M\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n\
--M--\r\n\
\r\n--S\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\nMIIBBB==\r\n--S--\r\n";
    let out = s(&hash_attachments(orig));
    assert!(out.contains("a.bin.hash"));
    assert!(!out.contains("QUJD"));
    // sha1sum of "QUJD" (coreutils).
    assert!(
        out.contains("\r\n\r\nb7eceac98410d063105b40aaeea98ae29db56953\r\n--M--"),
        "{out}"
    );
    assert!(out.contains("MIIBBB=="), "signature part must stay: {out}");
    assert!(!out.contains("smime.p7s.hash"));
}

#[test]
fn opaque_pkcs7_mime_original_is_left_as_is() {
    let orig = b"From: a@b.it\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\n\
Content-Disposition: attachment; filename=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIBBB==\r\n";
    assert_eq!(hash_attachments(orig), orig.to_vec());
}

#[test]
fn attached_message_is_replaced_whole() {
    let orig = b"From: a@b.it\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nvedi inoltro\r\n\
--B\r\nContent-Type: message/rfc822; name=\"inoltro.eml\"\r\nContent-Disposition: attachment; filename=\"inoltro.eml\"\r\n\r\n\
From: x@y.it\r\nSubject: vecchio\r\nContent-Type: multipart/mixed; boundary=\"C\"\r\n\r\n--C\r\nContent-Type: text/plain; name=\"dentro.txt\"\r\n\r\nsegreto\r\n--C--\r\n\
\r\n--B--\r\n";
    let out = s(&hash_attachments(orig));
    assert!(out.contains("inoltro.eml.hash"), "{out}");
    assert!(!out.contains("segreto"));
    assert!(
        !out.contains("dentro.txt.hash"),
        "nested parts go with their message"
    );
    assert!(out.contains("vedi inoltro"));
}

/// A part named outside ASCII: its `.hash` part's name is written the
/// RFC 2231 way (a header is 7-bit), and reads back as the same name.
#[test]
fn a_name_outside_ascii_is_written_in_rfc_2231_form() {
    let original = "From: a@b.test\r\nTo: c@d.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n--XYZ\r\n\
Content-Type: text/plain\r\n\r\ntesto\r\n--XYZ\r\n\
Content-Type: application/pdf; name*=utf-8''fattura%20n%C2%B0%2012%20%E2%80%94%20Nicol%C3%B2.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename*=utf-8''fattura%20n%C2%B0%2012%20%E2%80%94%20Nicol%C3%B2.pdf\r\n\r\n\
JVBERi0xLjQK\r\n--XYZ--\r\n";
    let out = hash_attachments(original.as_bytes());
    let header_of_hash_part = s(&out)
        .split("--XYZ")
        .find(|p| p.contains(".hash"))
        .unwrap()
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_string();
    assert!(header_of_hash_part.is_ascii(), "{header_of_hash_part}");
    let parsed = mail_parser::MessageParser::default().parse(&out).unwrap();
    let names: Vec<String> = parsed
        .attachments()
        .filter_map(|a| mail_parser::MimeHeaders::attachment_name(a).map(str::to_string))
        .collect();
    assert_eq!(names, ["fattura n° 12 — Nicolò.pdf.hash"]);
}
