#!/usr/bin/env bash
# Makes a test CA (WORKDIR/ca.pem) and a leaf certificate for 127.0.0.1 and localhost signed by it
# (WORKDIR/leaf.pem, WORKDIR/leaf-key.pem). rustls refuses a self-signed CA:TRUE certificate used as
# the server's, hence the two.
# usage: make-test-certs.sh WORKDIR
set -euo pipefail
work=${1:?usage: make-test-certs.sh WORKDIR}
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca-key.pem" -out "$work/ca.pem" -days 2 \
  -subj "/CN=envlayer test CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$work/leaf-key.pem" -out "$work/leaf.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/leaf.ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" -CAcreateserial \
  -out "$work/leaf.pem" -days 2 -extfile "$work/leaf.ext" 2>/dev/null
