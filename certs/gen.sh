#!/usr/bin/env bash
# Regenerate the TEST-ONLY PKI material for pecd (dev CA, PEC provider
# signing identities, TLS localhost cert, provider index LDIF).
# NEVER use any of this in production.
#
# Usage: bash certs/gen.sh   (from any directory)
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Start from scratch.
rm -f ca.key ca.pem \
      provider-a.key provider-a.pem \
      provider-b.key provider-b.pem \
      rogue.key rogue.pem \
      localhost.key localhost.pem \
      index.ldif index-bad.ldif ca.srl

# ---------------------------------------------------------------------------
# OpenSSL configuration: every certificate gets ONLY the extensions listed in
# its section (no implicit basicConstraints etc.).
# ---------------------------------------------------------------------------
cat > "$TMP/openssl.cnf" <<'CNF'
[ req ]
distinguished_name = req_dn
prompt             = no
string_mask        = utf8only
utf8               = yes

[ req_dn ]
CN = placeholder

[ v3_ca ]
basicConstraints       = critical,CA:TRUE
keyUsage               = critical,keyCertSign,cRLSign
subjectKeyIdentifier   = hash

# PEC signing certificate profile (pec-rules section 6.1).
# Deliberately NO basicConstraints.
[ pec_provider_a ]
keyUsage               = critical,digitalSignature
extendedKeyUsage       = emailProtection
subjectAltName         = email:posta-certificata@pec.provider-a.test
authorityKeyIdentifier = keyid
subjectKeyIdentifier   = hash

[ pec_provider_b ]
keyUsage               = critical,digitalSignature
extendedKeyUsage       = emailProtection
subjectAltName         = email:posta-certificata@pec.provider-b.test
authorityKeyIdentifier = keyid
subjectKeyIdentifier   = hash

[ pec_rogue ]
keyUsage               = critical,digitalSignature
extendedKeyUsage       = emailProtection
subjectAltName         = email:posta-certificata@pec.rogue.test
authorityKeyIdentifier = keyid
subjectKeyIdentifier   = hash

[ tls_localhost ]
basicConstraints       = CA:FALSE
keyUsage               = critical,digitalSignature,keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost,IP:127.0.0.1,IP:::1
authorityKeyIdentifier = keyid
subjectKeyIdentifier   = hash
CNF
CNF="$TMP/openssl.cnf"

genkey() { # $1 = output file; RSA-2048, PKCS#8 PEM, unencrypted
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
}

serial() { echo "0x$(openssl rand -hex 16)"; }

# ---------------------------------------------------------------------------
# Dev root CA
# ---------------------------------------------------------------------------
genkey ca.key
openssl req -new -x509 -config "$CNF" -key ca.key -sha256 -days 7300 \
    -subj "/C=IT/O=pecd dev/CN=pecd dev CA" \
    -set_serial "$(serial)" -extensions v3_ca -out ca.pem

# issue NAME SUBJECT SECTION
issue() {
    local name="$1" subj="$2" section="$3"
    genkey "$name.key"
    openssl req -new -config "$CNF" -key "$name.key" -subj "$subj" \
        -out "$TMP/$name.csr"
    openssl x509 -req -in "$TMP/$name.csr" -CA ca.pem -CAkey ca.key \
        -set_serial "$(serial)" -sha256 -days 3650 \
        -extfile "$CNF" -extensions "$section" -out "$name.pem" 2>/dev/null
}

issue provider-a "/C=IT/O=Provider A S.p.A./CN=Posta Certificata Provider A" pec_provider_a
issue provider-b "/C=IT/O=Provider B S.p.A./CN=Posta Certificata Provider B" pec_provider_b
issue rogue      "/C=IT/O=Rogue S.p.A./CN=Posta Certificata Rogue"           pec_rogue
issue localhost  "/CN=localhost"                                              tls_localhost

chmod 0644 ./*.key ./*.pem

# ---------------------------------------------------------------------------
# Provider index (RFC 6109 section 4.5) — provider A and B only (not rogue).
# ---------------------------------------------------------------------------
sha1_hex() { # uppercase hex SHA-1 of the DER certificate, no colons
    openssl x509 -in "$1" -outform DER | openssl dgst -sha1 -r | cut -d' ' -f1 | tr 'a-f' 'A-F'
}

# Emit "providerCertificate;binary:: <base64 DER>" folded per RFC 2849:
# physical lines at most 76 chars, continuation lines start with one space.
cert_attr() {
    local attr="providerCertificate;binary:: "
    local b64 first rest
    b64="$(openssl x509 -in "$1" -outform DER | base64 -w0)"
    first="${b64:0:$((76 - ${#attr}))}"
    rest="${b64:$((76 - ${#attr}))}"
    printf '%s%s\n' "$attr" "$first"
    if [ -n "$rest" ]; then
        printf '%s\n' "$rest" | fold -w 75 | sed 's/^/ /'
    fi
}

provider_entry() { # LETTER (a|b) UPPER (A|B)
    local l="$1" u="$2"
    printf 'dn: providerName=Provider %s S.p.A.,o=postacert\n' "$u"
    printf 'objectclass: top\n'
    printf 'objectclass: provider\n'
    printf 'providerName: Provider %s S.p.A.\n' "$u"
    printf 'providerCertificateHash: %s\n' "$(sha1_hex "provider-$l.pem")"
    cert_attr "provider-$l.pem"
    printf 'mailReceipt: posta-certificata@pec.provider-%s.test\n' "$l"
    printf 'managedDomains: pec.provider-%s.test\n' "$l"
    printf 'managedDomains: mail.provider-%s.test\n' "$l"
    printf 'description: Provider %s (dev)\n' "$u"
    printf 'LDIFLocationURL: https://pec.provider-%s.test/igpec/provider-%s.ldif.p7m\n' "$l" "$l"
}

{
    printf 'dn: o=postacert\n'
    printf 'objectclass: top\n'
    printf 'objectclass: organization\n'
    printf 'objectclass: LDIFLocationURLObject\n'
    printf 'o: postacert\n'
    printf 'LDIFLocationURL: https://igpec.dev.test/igpec.ldif.p7m\n'
    printf '\n'
    provider_entry a A
    printf '\n'
    provider_entry b B
} > index.ldif

# index-bad.ldif: provider B's record has a malformed line (missing colon).
sed 's/^managedDomains: pec\.provider-b\.test$/managedDomains pec.provider-b.test/' \
    index.ldif > index-bad.ldif
if [ "$(diff index.ldif index-bad.ldif | grep -c '^>' || true)" != 1 ]; then
    echo "gen.sh: failed to create index-bad.ldif with exactly one corrupted line" >&2
    exit 1
fi

chmod 0644 index.ldif index-bad.ldif

# ---------------------------------------------------------------------------
# Self-checks
# ---------------------------------------------------------------------------
openssl verify -CAfile ca.pem provider-a.pem provider-b.pem rogue.pem localhost.pem

for c in provider-a.pem provider-b.pem rogue.pem; do
    if openssl x509 -noout -text -in "$c" | grep -qi 'basic constraints'; then
        echo "gen.sh: $c must NOT carry a basicConstraints extension" >&2
        exit 1
    fi
done
if [ -n "$(openssl x509 -noout -ext basicConstraints -in provider-a.pem 2>/dev/null)" ]; then
    echo "gen.sh: provider-a.pem must NOT carry a basicConstraints extension" >&2
    exit 1
fi

# LDIF folding sanity: no physical line longer than 76 characters.
if awk 'length($0) > 76 { bad = 1 } END { exit !bad }' index.ldif; then
    echo "gen.sh: index.ldif has a line longer than 76 characters" >&2
    exit 1
fi

echo "gen.sh: OK — material written to $DIR"
