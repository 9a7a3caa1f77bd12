#!/bin/sh
# One-shot: the lab's certificates, made with `leitstand pki` into /pki (a volume).
# Runs again harmlessly: an existing CA is kept.
set -eu
dir=${LEITSTAND_PKI_DIR:-/pki}
if [ -e "$dir/ca.pem" ]; then
    echo "the lab PKI exists in $dir; keeping it"
    exit 0
fi
leitstand pki init --dir "$dir" --trust-domain lab.leitstand.example
for n in 1 2 3; do
    # Agents and peers dial controller-N:7401; the certificate must name it.
    leitstand pki issue --dir "$dir" --kind controller --name "$n" --dns "controller-$n"
done
for agent in ww-hengsteysee-1 leitstelle-1; do
    leitstand pki issue --dir "$dir" --kind agent --name "$agent"
done
leitstand pki issue --dir "$dir" --kind operator --name lab-admin
