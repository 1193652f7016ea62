#!/usr/bin/env bash
# Seed the fuzz corpora (fuzz/corpus/<target>/, not committed) from the real
# samples in ../shared/pec-samples/ and the repository's fixtures:
#   classify     every sample .eml, whole and as its signed entity
#   daticert     the Postecom daticert.xml and every daticert.xml inside the samples
#   ldif_index   certs/index.ldif
#   config       config/*.toml
#   smtp_session a few well-formed dialogues (submission and inbound)
#   submission   every sample's postacert.eml (what users submitted) and a
#                message with folded, encoded and repeated header fields
set -euo pipefail
cd "$(dirname "$0")"
samples=../../shared/pec-samples
c=corpus
mkdir -p $c/classify $c/daticert $c/ldif_index $c/config $c/smtp_session $c/submission
cp "$samples"/pec/*.eml "$samples"/rem/*.eml $c/classify/
cp "$samples"/pec/08-postecom-2012-daticert.xml $c/daticert/
python3 - "$samples" "$c" <<'PY'
import email, glob, os, sys
samples, out = sys.argv[1], sys.argv[2]
n = {"daticert.xml": 0, "postacert.eml": 0}
for f in sorted(glob.glob(os.path.join(samples, "*", "*.eml"))):
    msg = email.message_from_binary_file(open(f, "rb"))
    for part in msg.walk():
        name = part.get_filename()
        if name not in n:
            continue
        if name == "postacert.eml" and part.is_multipart():
            data = part.get_payload(0).as_bytes()  # message/rfc822
        else:
            data = part.get_payload(decode=True)
        if data:
            n[name] += 1
            target = "daticert" if name == "daticert.xml" else "submission"
            open(os.path.join(out, target, f"sample-{n[name]}-{name}"), "wb").write(data)
print(", ".join(f"{v} {k} extracted" for k, v in n.items()))
PY
cp ../certs/index.ldif $c/ldif_index/
cp ../config/*.toml $c/config/
# First byte: flags (bit 0 inbound, bit 1 STARTTLS offered, bit 2 TLS on).
# 0xff splits the rest into separate reads.
printf '\x04EHLO client.test\r\nAUTH PLAIN AG1hcmlvQHBlYy5leGFtcGxlLnRlc3QAeHh4eA==\r\nMAIL FROM:<mario@pec.example.test> SIZE=100\r\nRCPT TO:<a@pec.example.test>\r\nDATA\r\n\xffFrom: mario@pec.example.test\r\nTo: a@pec.example.test\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n' > $c/smtp_session/submission
printf '\x03EHLO mx.other.test\r\nSTARTTLS\r\n\xffEHLO mx.other.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@pec.example.test>\r\nRCPT TO:<b@elsewhere.test>\r\nDATA\r\nX: y\r\n\r\n..dot\r\n.\r\nRSET\r\nNOOP\r\nVRFY a\r\nQUIT\r\n' > $c/smtp_session/inbound
printf '\x00HELO x\r\nMAIL FROM:<a@b>\r\nAUTH LOGIN\r\nbWFyaW8=\r\neHh4eA==\r\nBDAT 5 LAST\r\nhello' > $c/smtp_session/odd
printf 'From: mario@pec.example.test\r\nTo: a@pec.example.test,\r\n b@example.com\r\nCc: a@pec.example.test\r\nSubject: =?utf-8?q?Fattura_n=C2=B0_1?= e\r\n =?us-ascii?Q?x=0D=0AX:_y?=\r\nX-TipoRicevuta: Breve\r\nBcc:\r\nMessage-ID: <m1@client>\r\nReply-To: r@x\r\n\r\nbody\r\n' > $c/submission/headers
for t in classify daticert ldif_index config smtp_session submission; do
  echo "$t: $(ls $c/$t | wc -l) seeds"
done
