//! Driving gdb through its machine interface (`gdb --interpreter=mi`), the way IDE
//! front ends do, for the debugger tests (`tests/gdb.rs`, `tests/gdb_rust.rs`),
//! included with `#[path]`. Every wait has a deadline: a gdb that does not answer in
//! time is killed and the test fails with the transcript.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A gdb MI session on one program.
pub struct Mi {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    deadline: Instant,
    limit: Duration,
    /// Everything gdb printed so far (MI records and the program's output).
    pub transcript: String,
}

/// Where a stop left the thread (from `-stack-info-frame`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub func: String,
    pub file: String,
    pub line: Option<usize>,
    pub addr: u64,
}

impl Mi {
    /// Starts `gdb --interpreter=mi` on `binary` with `args`, sourcing `extension`
    /// first when given. The whole session must end within `limit`. None (with a
    /// notice) when gdb is missing.
    pub fn start(
        binary: &Path,
        args: &str,
        extension: Option<&Path>,
        limit: Duration,
    ) -> Option<Mi> {
        let mut command = Command::new("gdb");
        command.args(["-nx", "-q", "--interpreter=mi"]);
        command.args(["-iex", "set debuginfod enabled off"]);
        command.args(["-iex", "set pagination off"]);
        if let Some(extension) = extension {
            command.arg("-x").arg(extension);
        }
        command.arg(binary);
        let mut child = match command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(err) => {
                crate::child::skip(format!("cannot start gdb ({err})"));
                return None;
            }
        };
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send(format!("[stderr] {line}")).is_err() {
                    break;
                }
            }
        });
        let mut mi = Mi {
            child,
            stdin,
            lines,
            deadline: Instant::now() + limit,
            limit,
            transcript: String::new(),
        };
        mi.command(&format!("-exec-arguments {args}"));
        Some(mi)
    }

    /// Sets a breakpoint at `location`, runs the program and waits for the stop
    /// there, then deletes the breakpoint. None (with a notice) when gdb may not trace
    /// the program here.
    pub fn run_to(&mut self, location: &str) -> Option<()> {
        let reply = self.command(&format!("-break-insert {location}"));
        if !reply.starts_with("^done") {
            self.fail(&format!("-break-insert {location}: {reply}"));
        }
        self.send("-exec-run");
        let result = self.wait_for("the result of -exec-run", |l| {
            l.starts_with("^running") || l.starts_with("^error")
        });
        if result.contains("ptrace") || result.contains("Couldn't get registers") {
            crate::child::skip(format!("gdb may not trace processes here\n{result}"));
            return None;
        }
        if result.starts_with("^error") {
            self.fail(&format!("-exec-run: {result}"));
        }
        let stop = self.wait_for("the stop at the breakpoint", |l| l.starts_with("*stopped"));
        if !stop.contains("reason=\"breakpoint-hit\"") {
            self.fail(&format!("the program did not stop at {location}: {stop}"));
        }
        self.command("-break-delete");
        Some(())
    }

    /// Sends one MI command.
    pub fn send(&mut self, command: &str) {
        self.transcript.push_str(&format!(">>> {command}\n"));
        if let Err(err) = writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush()) {
            self.fail(&format!("cannot write to gdb: {err}"));
        }
    }

    /// Reads lines until one satisfies `done`, and returns it.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push_str(&line);
                    self.transcript.push('\n');
                    if done(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                    "gdb (MI) did not print {what} within the session's limit of {:?}",
                    self.limit
                )),
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("gdb (MI) ended before printing {what}"))
                }
            }
        }
    }

    /// Sends a command that does not resume the program and waits for its result
    /// record; returns it (`^done...` or `^error...`).
    pub fn command(&mut self, command: &str) -> String {
        self.send(command);
        self.wait_for(&format!("the result of {command}"), |l| {
            l.starts_with("^done") || l.starts_with("^error") || l.starts_with("^exit")
        })
    }

    /// Sends an execution command and waits for the first `*stopped` record after it.
    pub fn run(&mut self, command: &str) -> String {
        self.send(command);
        let result = self.wait_for(&format!("the result of {command}"), |l| {
            l.starts_with("^running") || l.starts_with("^error")
        });
        if result.starts_with("^error") {
            self.fail(&format!("{command} failed: {result}"));
        }
        self.wait_for(&format!("a *stopped record after {command}"), |l| {
            l.starts_with("*stopped")
        })
    }

    /// Where the selected thread is, asked after a stop. gdb reads this command only
    /// once its stop handlers (the extension's) have run: the answer is the final
    /// position a front end would show.
    pub fn frame(&mut self) -> Frame {
        let reply = self.command("-stack-info-frame");
        if !reply.starts_with("^done") {
            self.fail(&format!("-stack-info-frame: {reply}"));
        }
        let field = |name: &str| {
            let key = format!("{name}=\"");
            reply
                .find(&key)
                .map(|i| &reply[i + key.len()..])
                .and_then(|rest| rest.split('"').next())
                .map(str::to_string)
        };
        Frame {
            func: field("func").unwrap_or_default(),
            file: field("fullname").unwrap_or_default(),
            line: field("line").and_then(|l| l.parse().ok()),
            addr: field("addr")
                .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0),
        }
    }

    /// Lets the program run to its end and quits gdb; returns the transcript.
    pub fn finish(mut self) -> String {
        self.command("-break-delete");
        self.send("-exec-continue");
        self.wait_for("the program's exit", |l| {
            l.starts_with("*stopped,reason=\"exited")
        });
        self.send("-gdb-exit");
        let _ = self.wait_for("gdb's exit", |l| l.starts_with("^exit"));
        let _ = self.child.wait();
        std::mem::take(&mut self.transcript)
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("{why}\ntranscript:\n{}", self.transcript);
    }
}

impl Drop for Mi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
