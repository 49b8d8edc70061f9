//! Progress output: a bar on a terminal (stderr on a pseudo-terminal), plain lines every few
//! seconds otherwise, nothing with `-q`; the summary at the end. Also `--help` and the shell
//! completions.

mod support;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use support::{finish, wait_deadline, Dir, DEADLINE, TEST_WORKER};

/// A pseudo-terminal: the controller side, and the path of the terminal side.
fn pty() -> (OwnedFd, std::path::PathBuf) {
    let controller = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&controller).expect("grantpt");
    unlockpt(&controller).expect("unlockpt");
    let name = ptsname(&controller, Vec::new()).expect("ptsname");
    let size = rustix::termios::Winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&controller, size).expect("window size");
    (
        controller,
        std::path::PathBuf::from(name.to_str().expect("a utf-8 path")),
    )
}

#[test]
fn a_bar_on_a_terminal() {
    let d = Dir::new();
    let input: String = (0..40).map(|_| "{\"ms\": 50}\n").collect();
    d.write("in.jsonl", &input);
    let (controller, terminal) = pty();
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&terminal)
        .expect("open the terminal side");
    let mut child = d
        .command(&[
            "run",
            "-j1",
            "-o",
            "out.jsonl",
            "in.jsonl",
            "-f",
            "sleep",
            "--",
            TEST_WORKER,
        ])
        .stderr(Stdio::from(tty))
        .stdout(Stdio::null())
        .spawn()
        .expect("start workcrew");
    // The command holds the only copy of the terminal side now: reading ends (EIO) when
    // it exits.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(controller);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let status = wait_deadline(&mut child, DEADLINE).expect("workcrew finished");
    let screen = reader.join().expect("the reader");
    assert_eq!(status.code(), Some(0), "{screen}");
    // indicatif redraws in place with ANSI escapes; the bar shows done/total and failures.
    assert!(screen.contains('\u{1b}'), "no escape sequences: {screen:?}");
    assert!(screen.contains("/40 0 failed"), "{screen:?}");
    assert!(screen.contains("ETA"), "{screen:?}");
    assert!(screen.contains("this run: 40 ok, 0 failed"), "{screen:?}");
    // No plain progress lines on a terminal.
    assert!(!screen.contains("workcrew: 1"), "{screen:?}");
}

#[test]
fn plain_lines_when_not_a_terminal_and_none_with_q() {
    let d = Dir::new();
    d.write("in.txt", &support::numbers(30));
    // 30 jobs of 0.1 s, one at a time: ~3 s, so at least one plain line (every 2 s).
    let run = d.run(&[
        "run",
        "--exec",
        "--lines",
        "-j1",
        "in.txt",
        "--",
        "sh",
        "-c",
        "sleep 0.1",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let plain: Vec<&str> = run.stderr.lines().filter(|l| l.contains("ETA")).collect();
    assert!(!plain.is_empty(), "{}", run.stderr);
    assert!(
        plain[0].starts_with("workcrew: ") && plain[0].contains("/30 done, 0 failed, "),
        "{}",
        plain[0]
    );
    assert!(
        !run.stderr.contains('\u{1b}'),
        "no escape sequences off a terminal"
    );
    assert!(
        run.stderr.contains("this run: 30 ok, 0 failed"),
        "{}",
        run.stderr
    );

    let input: String = (0..30).map(|_| "{\"ms\": 10}\n").collect();
    let d = Dir::new();
    d.write("in.jsonl", &input);
    let run = d.run(&[
        "run",
        "-q",
        "-j1",
        "in.jsonl",
        "-f",
        "sleep",
        "--",
        TEST_WORKER,
    ]);
    assert_eq!(run.code, Some(0));
    assert_eq!(run.stderr, "", "-q prints nothing");
}

#[test]
fn help_documents_the_exit_codes_and_examples() {
    let d = Dir::new();
    let run = d.run(&["--help"]);
    assert_eq!(run.code, Some(0));
    for text in ["Exit codes:", "130", "Examples:", "workcrew run"] {
        assert!(
            run.stdout.contains(text),
            "{text:?} missing from:\n{}",
            run.stdout
        );
    }
    let run = d.run(&["run", "--help"]);
    assert!(
        run.stdout.contains("--exec") && run.stdout.contains("{field}"),
        "{}",
        run.stdout
    );
    let run = d.run(&[]);
    assert_eq!(run.code, Some(2), "no arguments is a usage error");
}

#[test]
fn completions_for_each_shell() {
    let d = Dir::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef workcrew"),
        ("fish", "complete -c workcrew"),
    ] {
        let child = d.command(&["completions", shell]).spawn().unwrap();
        let run = finish(child);
        assert_eq!(run.code, Some(0), "{shell}");
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..run.stdout.len().min(300)]
        );
        assert!(run.stdout.contains("retry-failed"), "{shell}");
    }
}
