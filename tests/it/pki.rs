//! `leitstand pki`: the files of DESIGN.md §9, SANs, key usages, modes,
//! refusal to overwrite, and clear exit-2 errors for bad arguments.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support::{must_succeed, pki, run, text};

fn certificate(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).expect("read certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    pem.contents
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .expect("SAN extension parses")
        .expect("SAN extension present")
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => format!("URI:{uri}"),
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
    let eku = cert
        .extended_key_usage()
        .expect("EKU parses")
        .expect("EKU present")
        .value;
    (eku.server_auth, eku.client_auth)
}

#[test]
fn init_and_issue_write_the_right_certificates_with_private_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().join("pki");
    pki(&d, "stadt.example");
    let ds = d.to_str().expect("utf-8");

    let ca_der = certificate(&d.join("ca.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("CA parses");
    assert!(ca.is_ca(), "the CA is a CA");
    let usage = ca.key_usage().expect("key usage").expect("present").value;
    assert!(
        usage.key_cert_sign() && usage.crl_sign(),
        "the CA signs certificates and CRLs"
    );
    assert_eq!(sans(&ca), vec!["URI:spiffe://stadt.example"]);
    assert_eq!(mode(&d.join("ca.key")), 0o600);
    assert!(d.join("crl.pem").exists(), "init writes an empty CRL");

    let out = must_succeed(&[
        "pki",
        "issue",
        "--dir",
        ds,
        "--kind",
        "controller",
        "--name",
        "1",
        "--dns",
        "ctl-1.stadt.example",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(
        text(&out.stdout).contains("spiffe://stadt.example/controller/1"),
        "prints the identity"
    );
    let der = certificate(&d.join("controller-1.pem"));
    let (_, controller) = X509Certificate::from_der(&der).expect("parses");
    assert_eq!(
        sans(&controller),
        vec![
            "URI:spiffe://stadt.example/controller/1",
            "DNS:ctl-1.stadt.example",
            "IP:[127, 0, 0, 1]"
        ]
    );
    assert_eq!(
        eku(&controller),
        (true, true),
        "controllers serve and are peers' clients"
    );
    assert!(!controller.is_ca());
    let usage = controller
        .key_usage()
        .expect("key usage")
        .expect("present")
        .value;
    assert!(usage.digital_signature() && !usage.key_cert_sign());
    assert_eq!(mode(&d.join("controller-1.key")), 0o600);
    assert!(
        controller.verify_signature(Some(ca.public_key())).is_ok(),
        "signed by the CA"
    );

    must_succeed(&[
        "pki",
        "issue",
        "--dir",
        ds,
        "--kind",
        "agent",
        "--name",
        "ww-hengsteysee-1",
    ]);
    let der = certificate(&d.join("agent-ww-hengsteysee-1.pem"));
    let (_, agent) = X509Certificate::from_der(&der).expect("parses");
    assert_eq!(
        sans(&agent),
        vec!["URI:spiffe://stadt.example/agent/ww-hengsteysee-1"]
    );
    assert_eq!(eku(&agent), (false, true), "agents are clients only");
    assert_eq!(mode(&d.join("agent-ww-hengsteysee-1.key")), 0o600);

    must_succeed(&[
        "pki", "issue", "--dir", ds, "--kind", "operator", "--name", "alice", "--days", "30",
    ]);
    let der = certificate(&d.join("operator-alice.pem"));
    let (_, operator) = X509Certificate::from_der(&der).expect("parses");
    assert_eq!(eku(&operator), (false, true));
    let lifetime =
        operator.validity().not_after.timestamp() - operator.validity().not_before.timestamp();
    assert!(
        (30 * 86400..=30 * 86400 + 120).contains(&lifetime),
        "--days 30 gives 30 days: {lifetime}"
    );
}

#[test]
fn existing_files_are_never_overwritten_without_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().join("pki");
    pki(&d, "stadt.example");
    let ds = d.to_str().expect("utf-8");
    let ca_before = std::fs::read(d.join("ca.pem")).expect("ca");

    let out = run(&[
        "pki",
        "init",
        "--dir",
        ds,
        "--trust-domain",
        "stadt.example",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists; pass --force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(d.join("ca.pem")).expect("ca"),
        ca_before,
        "the CA is untouched"
    );

    must_succeed(&[
        "pki", "issue", "--dir", ds, "--kind", "agent", "--name", "a1",
    ]);
    let cert_before = std::fs::read(d.join("agent-a1.pem")).expect("cert");
    let out = run(&[
        "pki", "issue", "--dir", ds, "--kind", "agent", "--name", "a1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("agent-a1.pem already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(d.join("agent-a1.pem")).expect("cert"),
        cert_before
    );

    must_succeed(&[
        "pki", "issue", "--dir", ds, "--kind", "agent", "--name", "a1", "--force",
    ]);
    assert_ne!(
        std::fs::read(d.join("agent-a1.pem")).expect("cert"),
        cert_before,
        "--force replaces"
    );
    assert_eq!(
        mode(&d.join("agent-a1.key")),
        0o600,
        "a replaced key keeps mode 0600"
    );
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().join("pki");
    let ds = d.to_str().expect("utf-8");
    let out = run(&[
        "pki", "issue", "--dir", ds, "--kind", "agent", "--name", "a1",
    ]);
    assert_eq!(out.status.code(), Some(2), "issue before init");
    assert!(
        text(&out.stderr).contains("ca.pem"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&[
        "pki",
        "init",
        "--dir",
        ds,
        "--trust-domain",
        "Stadt Example",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("trust domain"),
        "{}",
        text(&out.stderr)
    );

    pki(&d, "stadt.example");
    let cases: &[(&[&str], &str)] = &[
        (&["--kind", "agent", "--name", "a/b"], "--name"),
        (
            &["--kind", "controller", "--name", "1"],
            "needs at least one --dns or --ip",
        ),
        (
            &["--kind", "controller", "--name", "1", "--dns", "not a name"],
            "not a valid DNS name",
        ),
        (
            &["--kind", "controller", "--name", "1", "--ip", "300.1.1.1"],
            "invalid value",
        ),
        (&["--kind", "robot", "--name", "r"], "invalid value"),
        (
            &["--kind", "agent", "--name", "a", "--days", "0"],
            "invalid value",
        ),
    ];
    for (args, message) in cases {
        let mut full = vec!["pki", "issue", "--dir", ds];
        full.extend_from_slice(args);
        let out = run(&full);
        assert_eq!(out.status.code(), Some(2), "leitstand {full:?}");
        assert!(
            text(&out.stderr).contains(message),
            "leitstand {full:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn revoke_adds_the_serial_to_the_crl_and_keeps_earlier_revocations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().join("pki");
    pki(&d, "stadt.example");
    let ds = d.to_str().expect("utf-8");
    for name in ["a1", "a2"] {
        must_succeed(&[
            "pki", "issue", "--dir", ds, "--kind", "agent", "--name", name,
        ]);
    }
    must_succeed(&[
        "pki", "revoke", "--dir", ds, "--kind", "agent", "--name", "a1",
    ]);
    must_succeed(&[
        "pki", "revoke", "--dir", ds, "--kind", "agent", "--name", "a2",
    ]);

    let pem = std::fs::read(d.join("crl.pem")).expect("crl");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents)
        .expect("CRL");
    let revoked: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    for name in ["a1", "a2"] {
        let der = certificate(&d.join(format!("agent-{name}.pem")));
        let (_, cert) = X509Certificate::from_der(&der).expect("parses");
        assert!(
            revoked.contains(&cert.raw_serial().to_vec()),
            "{name} is in the CRL"
        );
    }
    assert_eq!(revoked.len(), 2);
    assert_eq!(
        crl.crl_number().map(|n| n.to_string()),
        Some("3".into()),
        "init, then two revocations"
    );
}
