//! The deploy scripts' `--help`: the comment block at the top of each,
//! whole, and nothing of the code after it (run.sh once ended its help
//! with a stray `set -u`). Needs neither root nor docker: the options are
//! read before anything is checked.

use std::process::Command;

fn help(script: &str) -> String {
    let path = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .args([&path, "--help"])
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{script} --help: {}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The script's header comment as its help should print it.
fn header(script: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("{}/{script}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.lines()
        .skip(1)
        .take_while(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .unwrap_or(l.trim_start_matches('#'))
                .to_owned()
        })
        .collect()
}

#[test]
fn help_is_the_header_and_only_the_header() {
    for script in ["deploy/lab.sh", "deploy/container/run.sh", "deploy/deb/build.sh"] {
        let shown = help(script);
        let lines: Vec<&str> = shown.lines().collect();
        let want = header(script);
        assert!(want.len() > 3, "{script}: no header comment");
        assert_eq!(lines, want, "{script} --help");
        assert!(!shown.contains("set -"), "{script} --help shows code:\n{shown}");
    }
}
