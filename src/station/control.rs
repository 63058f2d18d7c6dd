//! The control socket of a running station: a Unix socket, `control.sock` in its state folder,
//! readable and writable by the station's user only (mode 0600). One request per connection,
//! one line of text; one reply, text that starts with `ok:` or `error:`.
//!
//! - `recipe NAME`: judge with recipe NAME from the next part on;
//! - `self-test`: judge every recipe's reference parts now (between parts), reply with what
//!   each got;
//! - `acknowledge`: clear a failed self-test (its recipe judges again);
//! - `status`: the active recipe, counters, self-test faults and drift.
//!
//! `clipada control --config station.toml …` sends one. A thread accepts connections and hands
//! requests to the inspection loop, which answers them between parts: a request never
//! interrupts a part, and a client that stalls only loses its own reply.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::trigger::{InputThread, STOP_CHECK};

/// The socket's name in the state folder.
pub const SOCKET: &str = "control.sock";
/// Longest request line.
const MAX_REQUEST: usize = 256;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request may wait for the loop's answer (a self-test judges every reference).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// Requests waiting for the loop at once.
const QUEUED: usize = 4;

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Judge with this recipe from the next part on.
    Recipe(String),
    /// Judge the reference parts now.
    SelfTest,
    /// Clear failed self-tests.
    Acknowledge,
    /// Report the station's state.
    Status,
}

impl Command {
    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Command, String> {
        let mut words = line.split_whitespace();
        let command = match (words.next(), words.next(), words.next()) {
            (Some("recipe"), Some(name), None) => Command::Recipe(name.to_string()),
            (Some("self-test"), None, _) => Command::SelfTest,
            (Some("acknowledge"), None, _) => Command::Acknowledge,
            (Some("status"), None, _) => Command::Status,
            _ => return Err(format!("unknown request `{line}`: recipe NAME, self-test, acknowledge or status")),
        };
        Ok(command)
    }
}

/// A request and where its answer goes.
pub struct Request {
    /// What is asked.
    pub command: Command,
    reply: mpsc::Sender<String>,
}

impl Request {
    /// Answers it: `Ok` text as `ok: …`, `Err` as `error: …`.
    pub fn answer(self, answer: Result<String, String>) {
        let text = match answer {
            Ok(text) => format!("ok: {text}"),
            Err(text) => format!("error: {text}"),
        };
        let _ = self.reply.send(text);
    }
}

/// The listening socket and its thread; the socket file is removed when dropped.
pub struct ControlServer {
    requests: mpsc::Receiver<Request>,
    path: PathBuf,
    _thread: InputThread,
}

impl ControlServer {
    /// Listens at [`SOCKET`] in `state_dir` (the station's own folder, locked by it: a socket
    /// left there by an earlier run is replaced; anything else of that name is refused).
    pub fn bind(state_dir: &Path) -> anyhow::Result<ControlServer> {
        let path = state_dir.join(SOCKET);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(&path).with_context(|| format!("{}: cannot replace", path.display()))?
            }
            Ok(_) => anyhow::bail!("{}: not a socket clipada made: remove it", path.display()),
            Err(_) => {}
        }
        let listener = UnixListener::bind(&path).with_context(|| format!("{}: cannot listen", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("{}: cannot restrict to its owner", path.display()))?;
        listener.set_nonblocking(true).context("control socket")?;
        let (sender, requests) = mpsc::sync_channel(QUEUED);
        let thread = InputThread::spawn("control", move |stop| serve(&listener, &sender, stop))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(ControlServer { requests, path, _thread: thread })
    }

    /// The next request waiting, if any.
    pub fn poll(&self) -> Option<Request> {
        self.requests.try_recv().ok()
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepts clients one at a time until `stop`.
fn serve(listener: &UnixListener, requests: &mpsc::SyncSender<Request>, stop: &AtomicBool) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => answer_client(stream, requests, stop),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(STOP_CHECK),
            Err(e) => {
                tracing::warn!("control socket: {e}");
                std::thread::sleep(STOP_CHECK * 10);
            }
        }
    }
}

/// Reads one request from `stream`, hands it to the loop and writes its answer.
fn answer_client(mut stream: UnixStream, requests: &mpsc::SyncSender<Request>, stop: &AtomicBool) {
    use std::sync::atomic::Ordering;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let mut line = Vec::new();
    let read = (&mut stream).take(MAX_REQUEST as u64 + 1).read_to_end(&mut line);
    let reply = |stream: &mut UnixStream, text: &str| {
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.write_all(b"\n");
    };
    let text = match (read, std::str::from_utf8(&line)) {
        (Err(e), _) => return reply(&mut stream, &format!("error: the request was not read: {e}")),
        (Ok(_), _) if line.len() > MAX_REQUEST => {
            // Read (some of) the rest: a socket closed with unread data resets, and the client
            // would get no answer.
            let _ = std::io::copy(&mut (&mut stream).take(1 << 16), &mut std::io::sink());
            return reply(&mut stream, &format!("error: a request is one line of at most {MAX_REQUEST} bytes"));
        }
        (Ok(_), Err(_)) => return reply(&mut stream, "error: not UTF-8 text"),
        (Ok(_), Ok(text)) => text.trim().to_string(),
    };
    let command = match Command::parse(&text) {
        Ok(command) => command,
        Err(e) => return reply(&mut stream, &format!("error: {e}")),
    };
    let (sender, answer) = mpsc::channel();
    if requests.try_send(Request { command, reply: sender }).is_err() {
        return reply(&mut stream, "error: the station has requests waiting: try again");
    }
    let until = Instant::now() + ANSWER_TIMEOUT;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        match answer.recv_timeout(STOP_CHECK) {
            Ok(text) => return reply(&mut stream, &text),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    reply(&mut stream, "error: the station did not answer (stopped, or busy past the timeout)");
}

/// Sends `request` to the station whose state folder is `state_dir`; its answer, an error when
/// it is `error: …` or none came.
pub fn send(state_dir: &Path, request: &str) -> anyhow::Result<String> {
    let path = state_dir.join(SOCKET);
    let mut stream = UnixStream::connect(&path)
        .with_context(|| format!("{}: no station listens there (is it running?)", path.display()))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT + REQUEST_TIMEOUT)).context("control socket")?;
    stream.write_all(request.as_bytes()).context("control socket: cannot send")?;
    stream.shutdown(std::net::Shutdown::Write).context("control socket")?;
    let mut answer = String::new();
    stream.take(1 << 16).read_to_string(&mut answer).context("control socket: no answer")?;
    let answer = answer.trim_end().to_string();
    match answer.strip_prefix("error: ") {
        Some(why) => anyhow::bail!("{}: {why}", path.display()),
        None if answer.starts_with("ok: ") => Ok(answer["ok: ".len()..].to_string()),
        None => anyhow::bail!("{}: an answer that is neither ok nor error: {answer:?}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_named() {
        assert_eq!(Command::parse("recipe bottle-a"), Ok(Command::Recipe("bottle-a".into())));
        assert_eq!(Command::parse(" self-test \n"), Ok(Command::SelfTest));
        assert_eq!(Command::parse("acknowledge"), Ok(Command::Acknowledge));
        assert_eq!(Command::parse("status"), Ok(Command::Status));
        for bad in ["", "recipe", "recipe a b", "reboot", "status now"] {
            assert!(Command::parse(bad).unwrap_err().contains("unknown request"), "{bad}");
        }
    }

    #[test]
    fn a_request_is_answered_by_the_loop_and_bad_clients_get_errors() {
        let dir = tempfile::tempdir().unwrap();
        let server = ControlServer::bind(dir.path()).unwrap();
        let mode = std::fs::metadata(server.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the station's user may talk to it");
        let client = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || send(&dir, "recipe b")
        });
        let request = loop {
            if let Some(request) = server.poll() {
                break request;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(request.command, Command::Recipe("b".into()));
        request.answer(Ok("from the next part".into()));
        assert_eq!(client.join().unwrap().unwrap(), "from the next part");

        let error = send(dir.path(), "format disk").unwrap_err().to_string();
        assert!(error.contains("unknown request"), "{error}");
        let long = "recipe ".to_string() + &"x".repeat(400);
        let error = send(dir.path(), &long).unwrap_err().to_string();
        assert!(error.contains("at most 256 bytes"), "{error}");
        // An answer refused by the loop comes back as an error.
        let client = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || send(&dir, "acknowledge")
        });
        let request = loop {
            if let Some(request) = server.poll() {
                break request;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        request.answer(Err("nothing to acknowledge".into()));
        assert!(client.join().unwrap().unwrap_err().to_string().contains("nothing to acknowledge"));
        let path = server.path().to_path_buf();
        drop(server);
        assert!(!path.exists(), "the socket goes with the station");
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SOCKET), b"mine").unwrap();
        let error = ControlServer::bind(dir.path()).err().unwrap().to_string();
        assert!(error.contains("not a socket"), "{error}");
        assert_eq!(std::fs::read(dir.path().join(SOCKET)).unwrap(), b"mine");
    }
}
