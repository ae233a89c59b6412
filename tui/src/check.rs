//! `loopscope check`: run a program with the agent's CI reporting switched on, and fail when a poll blocked.

/// Arguments of `loopscope check`.
#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// The command to run, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// Runs `loopscope check`; returns the process exit code.
pub(crate) fn run(args: CheckArgs) -> std::process::ExitCode {
    eprintln!("loopscope check: not implemented yet ({:?})", args.command);
    std::process::ExitCode::from(2)
}
