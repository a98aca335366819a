//! The `mmada` command line: argument parsing and wiring only.

mod cli;
mod train_cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`mmada inspect x | head`), like other command-line tools,
    // instead of panicking in println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
