//! The `mmada` command line: argument parsing and wiring only.

mod cli;
mod train_cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("").to_string();
            eprintln!("error: {line}");
            if msg.lines().count() > 1 && std::env::var_os("MMADA_VERBOSE").is_some() {
                eprintln!("{msg}");
            }
            ExitCode::FAILURE
        }
    }
}
