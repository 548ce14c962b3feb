//! `tokengun man`: the man page, generated from the command line's own definitions: `tokengun(1)`
//! on stdout, or with `--out DIR` one page per command (`tokengun.1`, `tokengun-run.1`, ...).

use clap::{Args, CommandFactory};
use std::path::{Path, PathBuf};

/// `tokengun man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write tokengun.1 and a page per subcommand (tokengun-run.1, ...) into this folder
    /// instead of tokengun.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Writes the page(s); the exit code.
pub fn exec(args: &ManArgs) -> u8 {
    let cmd = super::Cli::command();
    let done = match &args.out {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock()),
        Some(dir) => write_pages(cmd, dir),
    };
    match done {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!(
                "error: cannot write the man page{}: {e}",
                args.out
                    .as_ref()
                    .map(|d| format!(" into {}", d.display()))
                    .unwrap_or_default()
            );
            1
        }
    }
}

/// `tokengun.1` and `tokengun-<sub>.1` for each subcommand (help excluded).
fn write_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    let write = |name: &str, c: clap::Command| -> std::io::Result<()> {
        let mut page = Vec::new();
        clap_mangen::Man::new(c).title(name).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("tokengun-{}", sub.get_name());
        write(&name, sub.clone())?;
    }
    write("tokengun", cmd)
}
