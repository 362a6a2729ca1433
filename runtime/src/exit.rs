//! How every OWSU binary ends: the exit code its command returned, `1` with the error chain on
//! one line when it failed, and `0`, quietly, when the reader of its output went away
//! (`owsu-producer units | head`): a closed pipe is the reader's choice, not a failure.

/// Runs a binary's command and exits with its code. `name` prefixes an error message.
pub fn run_main(name: &str, command: impl FnOnce() -> anyhow::Result<i32>) -> ! {
    quiet_on_broken_pipe();
    let code = match command() {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

/// Whether `e` was caused by writing to a closed pipe.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` panics when standard output is a closed pipe (Rust ignores SIGPIPE, so the write
/// fails with EPIPE instead of ending the process). This panic hook ends the process with
/// status 0 and no message in that one case, and leaves every other panic to the default hook.
pub(crate) fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.starts_with("failed printing to stdout") && payload.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_anywhere_in_the_chain_is_recognised() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e = anyhow::Error::from(pipe).context("writing the table");
        assert!(is_broken_pipe(&e));
        let other = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other.context("reading")));
    }
}
