//! `tokengun-agent certs`: a lab's CA and certificates (see [`crate::certs`]).

use super::CmdError;
use crate::certs::{self, CertRequest};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(super) struct CertsArgs {
    /// Folder for the PEM files; its ca.pem/ca-key.pem are made on first use, then reused.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// An agent's certificate, for the names and addresses controllers dial it by,
    /// comma-separated (e.g. gpu1.lab,10.0.0.5); the first names its files (repeatable).
    #[arg(long = "agent", value_name = "NAMES")]
    agents: Vec<String>,
    /// A controller's client certificate, by name (repeatable).
    #[arg(long = "controller", value_name = "NAME")]
    controllers: Vec<String>,
    /// Validity of the agent and controller certificates, in days (the CA gets 10 years).
    #[arg(long, default_value_t = 825)]
    days: u32,
}

/// Makes the certificates and says which files it wrote.
pub(super) fn exec(args: CertsArgs) -> Result<(), CmdError> {
    let agents = args
        .agents
        .iter()
        .map(|a| a.split(',').map(str::to_string).collect())
        .collect();
    if args.days == 0 {
        return Err(CmdError::usage("--days must be at least 1"));
    }
    let files = certs::make(&CertRequest {
        dir: args.dir,
        agents,
        controllers: args.controllers,
        valid_days: args.days,
    })
    .map_err(CmdError::failed)?;
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
