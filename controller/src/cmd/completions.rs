//! `tokengun completions SHELL`: a completion script for bash, zsh, fish, elvish or PowerShell,
//! generated from the command line's own definitions (so it never drifts from the flags).

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// `tokengun completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the script to stdout; the exit code. A reader that stops early (`| head`) is fine.
pub fn exec(args: &CompletionsArgs) -> u8 {
    use std::io::Write;
    let mut cmd = super::Cli::command();
    // Into memory first: the generator panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "tokengun", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            1
        }
    }
}
