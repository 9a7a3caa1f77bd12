//! `leitstand pki init|issue|revoke`: prints what it wrote.

use std::process::ExitCode;

use leitstand_proto::Error;
use leitstand_proto::pki::{self, IssueRequest, Validity};

use crate::PkiCommand;

pub(crate) fn run(command: PkiCommand) -> ExitCode {
    let result = match command {
        PkiCommand::Init {
            dir,
            trust_domain,
            force,
        } => pki::init(&dir, &trust_domain, force).map(|w| report("certificate authority", &w)),
        PkiCommand::Issue {
            dir,
            kind,
            name,
            dns,
            ip,
            days,
            force,
        } => {
            let request = IssueRequest {
                kind: kind.into(),
                name,
                dns,
                ips: ip,
                validity: Validity::days_from_now(days),
                force,
            };
            pki::issue(&dir, &request).map(|w| report("certificate", &w))
        }
        PkiCommand::Revoke { dir, kind, name } => {
            pki::revoke(&dir, kind.into(), &name).map(|serial| {
                #[allow(clippy::print_stdout)]
                {
                    println!(
                        "revoked {kind:?} {name} (serial {serial}); wrote {}",
                        pki::crl_path(&dir).display()
                    );
                    println!("send SIGHUP to every controller to apply it");
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", leitstand_proto::error_chain(&e));
            match e {
                // Bad arguments, or a --dir without the files `pki init` writes.
                Error::AlreadyExists { .. }
                | Error::Pki(_)
                | Error::Identity(_)
                | Error::ReadFile { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[allow(clippy::print_stdout)]
fn report(what: &str, written: &pki::Written) {
    println!("{what} for {}", written.identity);
    for file in &written.files {
        println!("  wrote {}", file.display());
    }
}
