//! How a failed command reports its error on stderr.
//!
//! anyhow's own report prints every cause of the chain on its own line,
//! and many errors (std's, and libraries' `"...: {0}"` with `#[from]`)
//! both show their cause and return it as `source()`: "0: connection:
//! Connection refused (os error 111)" then "1: Connection refused (os
//! error 111)". This report leaves out a cause whose text the line before
//! it already shows.

use std::fmt::Write as _;

/// The text printed for a command that failed: `Error: ...`, then the
/// causes that add something, one a line.
pub fn report(e: &anyhow::Error) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut shown = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if text.is_empty() || shown.contains(&text) {
            continue;
        }
        shown = text.clone();
        lines.push(text);
    }
    let mut out = format!("Error: {e}\n");
    match lines.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(out, "\nCaused by:\n    {one}");
        }
        many => {
            out.push_str("\nCaused by:\n");
            for (n, line) in many.iter().enumerate() {
                let _ = writeln!(out, "    {n}: {line}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection: {0}")]
    struct Repeats(#[from] std::io::Error);

    #[test]
    fn a_cause_the_line_before_shows_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let io_text = io.to_string();
        let e = anyhow::Error::from(Repeats(io)).context("asking 127.0.0.1:4334");
        let text = report(&e);
        assert_eq!(
            text,
            format!("Error: asking 127.0.0.1:4334\n\nCaused by:\n    connection: {io_text}\n")
        );
        assert_eq!(text.matches(&io_text).count(), 1, "{text}");
    }

    #[test]
    fn causes_that_add_something_are_kept_in_order() {
        let e = anyhow::anyhow!("the disk is full")
            .context("writing raft.redb")
            .context("vipool init");
        assert_eq!(
            report(&e),
            "Error: vipool init\n\nCaused by:\n    0: writing raft.redb\n    1: the disk is full\n"
        );
        assert_eq!(report(&anyhow::anyhow!("plain")), "Error: plain\n");
    }
}
