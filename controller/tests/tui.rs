//! The live console for real: the `tokengun` binary in a pseudo-terminal draws frames with live
//! rows, `q` stops the run as Ctrl-C does (results kept, run marked interrupted, exit 130), and
//! the terminal is given back; `--no-tui` on the same terminal prints plain lines.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]
// Plain threads, no async runtime here: blocking sleeps are fine.
#![allow(clippy::disallowed_methods)]

use portable_pty::{Child, CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tokengun");
const ENTER_ALTERNATE_SCREEN: &str = "\x1b[?1049h";
const LEAVE_ALTERNATE_SCREEN: &str = "\x1b[?1049l";
const SHOW_CURSOR: &str = "\x1b[?25h";

/// `tokengun` in a 120x40 pseudo-terminal, its output collected as it comes.
struct PtyRun {
    child: Box<dyn Child + Send + Sync>,
    input: Box<dyn Write + Send>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl PtyRun {
    fn spawn(args: &[&str], cwd: &Path) -> Self {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 120,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = CommandBuilder::new(BIN);
        cmd.args(args);
        cmd.cwd(cwd);
        cmd.env("TERM", "xterm-256color");
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let input = pair.master.take_writer().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        // The terminal must be drained or the program blocks on its writes.
        std::thread::spawn(move || {
            let _master = pair.master;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            input,
            output,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until everything in `needles` was drawn.
    fn wait_for(&mut self, needles: &[&str], limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let text = self.text();
            if needles.iter().all(|n| text.contains(n)) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tokengun exited ({status:?}) before drawing {needles:?}:\n{text}");
            }
            assert!(
                Instant::now() < end,
                "{needles:?} not drawn within {limit:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for exit; returns the exit code and the whole output.
    fn finish(mut self, limit: Duration) -> (u32, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // What the program wrote last is read off the terminal shortly after.
                std::thread::sleep(Duration::from_millis(300));
                return (status.exit_code(), self.text());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("still running after {limit:?}:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn csv_column(text: &str, row: usize, column: &str) -> String {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == column).unwrap();
    lines
        .nth(row)
        .unwrap()
        .split(',')
        .nth(at)
        .unwrap()
        .to_string()
}

#[test]
fn q_stops_the_run_keeps_the_results_and_gives_the_terminal_back() {
    let out = tempfile::tempdir().unwrap();
    let mut run = PtyRun::spawn(
        &[
            "run",
            "--sim",
            "--sim-tokens",
            "100000",
            "--sim-token-delay",
            "1ms",
            "--levels",
            "3,4",
            "--run-id",
            "live",
            "--out",
            out.path().to_str().unwrap(),
        ],
        out.path(),
    );
    // The console is up and shows the agent's live rows.
    run.wait_for(
        &[
            ENTER_ALTERNATE_SCREEN,
            "tokengun live",
            "REQ ID",
            "TOKENS/S",
            "In Progress",
            "AGENT",
        ],
        Duration::from_secs(60),
    );
    run.input.write_all(b"q").unwrap();
    run.input.flush().unwrap();
    let (code, text) = run.finish(Duration::from_secs(30));
    assert_eq!(code, 130, "exit code of an interrupted run:\n{text}");

    // The terminal was given back after the last frame: main screen, cursor shown.
    let entered = text.rfind(ENTER_ALTERNATE_SCREEN).unwrap();
    let left = text
        .rfind(LEAVE_ALTERNATE_SCREEN)
        .expect("the alternate screen was left");
    assert!(left > entered);
    assert!(text[left..].contains(SHOW_CURSOR), "cursor shown again");
    // What follows is plain output on the main screen.
    assert!(text[left..].contains("Sweep summary"), "{}", &text[left..]);
    assert!(text[left..].contains("interrupted"));

    // The results are kept and the run is marked interrupted.
    let dir = out.path().join("live");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "interrupted");
    let cycles = std::fs::read_to_string(dir.join("cycles.csv")).unwrap();
    assert_eq!(cycles.lines().count(), 2, "one (partial) cycle: {cycles}");
    assert_eq!(csv_column(&cycles, 0, "partial"), "true");
    let summary = std::fs::read_to_string(
        dir.join("ollama/deepseek-r1-7b/test_results_3/request_summary.csv"),
    )
    .unwrap();
    assert_eq!(summary.lines().count(), 4, "all 3 requests: {summary}");
    for row in 0..3 {
        assert_eq!(csv_column(&summary, row, "Status"), "Aborted");
    }
    assert!(!dir.join("ollama/deepseek-r1-7b/test_results_4").exists());
}

#[test]
fn no_tui_prints_plain_lines_on_a_terminal() {
    let out = tempfile::tempdir().unwrap();
    let run = PtyRun::spawn(
        &[
            "run",
            "--sim",
            "--levels",
            "1",
            "--no-tui",
            "--run-id",
            "plain",
            "--out",
            out.path().to_str().unwrap(),
        ],
        out.path(),
    );
    let (code, text) = run.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("▶ cycle 1/1"), "{text}");
    assert!(
        text.contains("| REQ ID | TOKENS |"),
        "the study's table: {text}"
    );
    assert!(!text.contains(ENTER_ALTERNATE_SCREEN), "{text}");
}
