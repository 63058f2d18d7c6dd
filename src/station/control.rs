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
//! `clipada control --config station.toml …` sends one. A thread accepts connections and
//! answers each on a thread of its own (at most 8 at once; a request line must come whole within
//! 2 s), handing requests to the inspection loop, which answers them between parts: a request
//! never interrupts a part, and a client that stalls delays no other. A request the loop did
//! not answer within 300 s is withdrawn (the client is told; it is not carried out later).

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
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
/// Clients being answered at once.
const MAX_CLIENTS: usize = 8;

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
    /// Set when the client was told it timed out: the request is not carried out.
    withdrawn: Arc<AtomicBool>,
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
    /// Tells the clients' threads the station is gone.
    closing: Arc<AtomicBool>,
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
        let listener = {
            let (address, _dir) = address(state_dir)?;
            UnixListener::bind(&address).with_context(|| format!("{}: cannot listen", path.display()))?
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("{}: cannot restrict to its owner", path.display()))?;
        listener.set_nonblocking(true).context("control socket")?;
        let (sender, requests) = mpsc::sync_channel(QUEUED);
        let closing = Arc::new(AtomicBool::new(false));
        let theirs = closing.clone();
        let thread = InputThread::spawn("control", move |stop| serve(&listener, &sender, stop, &theirs))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(ControlServer { requests, path, closing, _thread: thread })
    }

    /// The next request waiting that its client has not withdrawn, if any.
    pub fn poll(&self) -> Option<Request> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).find(|r| !r.withdrawn.load(Ordering::Relaxed))
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Longest socket path the kernel takes (`sun_path` holds 108 bytes with its terminating zero).
const MAX_SOCKET_PATH: usize = 107;

/// The address of the socket in `state_dir`: its path, or, when that is too long for a socket
/// address, the same file reached through the folder held open (`/proc/self/fd/N/…`; the
/// returned handle must live until the socket is bound or connected).
fn address(state_dir: &Path) -> anyhow::Result<(PathBuf, Option<std::fs::File>)> {
    use std::os::unix::ffi::OsStrExt;
    let path = state_dir.join(SOCKET);
    if path.as_os_str().as_bytes().len() <= MAX_SOCKET_PATH {
        return Ok((path, None));
    }
    let dir = std::fs::File::open(state_dir).with_context(|| format!("{}: cannot open", state_dir.display()))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    Ok((PathBuf::from(format!("/proc/self/fd/{fd}/{SOCKET}")), Some(dir)))
}

/// Accepts clients until `stop`, each answered on a thread of its own, at most
/// [`MAX_CLIENTS`] at once (one more is told so and closed): a client that stalls delays no
/// other.
fn serve(listener: &UnixListener, requests: &mpsc::SyncSender<Request>, stop: &AtomicBool, closing: &Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) if clients.load(Ordering::Relaxed) >= MAX_CLIENTS => {
                let _ = stream.set_write_timeout(Some(STOP_CHECK));
                let _ = stream.write_all(b"error: too many clients at once: try again\n");
            }
            Ok((stream, _)) => {
                clients.fetch_add(1, Ordering::Relaxed);
                let (requests, closing, done) = (requests.clone(), closing.clone(), clients.clone());
                let spawned = std::thread::Builder::new().name("control client".into()).spawn(move || {
                    answer_client(stream, &requests, &closing);
                    done.fetch_sub(1, Ordering::Relaxed);
                });
                if let Err(e) = spawned {
                    tracing::warn!("control socket: cannot answer a client: {e}");
                    clients.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(STOP_CHECK),
            Err(e) => {
                tracing::warn!("control socket: {e}");
                std::thread::sleep(STOP_CHECK * 10);
            }
        }
    }
}

/// Reads one request line (up to its newline or the end of what the client sends) within
/// [`REQUEST_TIMEOUT`] in all.
fn read_request(stream: &mut UnixStream) -> Result<String, String> {
    let until = Instant::now() + REQUEST_TIMEOUT;
    let mut line = Vec::new();
    let mut buffer = [0u8; 64];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no whole request line within {} s", REQUEST_TIMEOUT.as_secs()));
        }
        let _ = stream.set_read_timeout(Some(left));
        let n = match stream.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(format!("no whole request line within {} s", REQUEST_TIMEOUT.as_secs())),
        };
        let end = buffer[..n].iter().position(|b| *b == b'\n');
        line.extend_from_slice(&buffer[..end.unwrap_or(n)]);
        if line.len() > MAX_REQUEST {
            // Read (some of) the rest: a socket closed with unread data resets, and the client
            // would get no answer.
            let _ = stream.set_read_timeout(Some(STOP_CHECK));
            let _ = std::io::copy(&mut (&mut *stream).take(1 << 16), &mut std::io::sink());
            return Err(format!("a request is one line of at most {MAX_REQUEST} bytes"));
        }
        if n == 0 || end.is_some() {
            let text = std::str::from_utf8(&line).map_err(|_| "not UTF-8 text".to_string())?;
            return Ok(text.trim().to_string());
        }
    }
}

/// Reads one request from `stream`, hands it to the loop and writes its answer (a request not
/// answered in time is withdrawn: the loop skips it).
fn answer_client(mut stream: UnixStream, requests: &mpsc::SyncSender<Request>, closing: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let request = read_request(&mut stream);
    let mut reply = |text: &str| {
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.write_all(b"\n");
    };
    let command = match request.and_then(|text| Command::parse(&text)) {
        Ok(command) => command,
        Err(e) => return reply(&format!("error: {}", e.escape_debug())),
    };
    let (sender, answer) = mpsc::channel();
    let withdrawn = Arc::new(AtomicBool::new(false));
    if requests.try_send(Request { command, reply: sender, withdrawn: withdrawn.clone() }).is_err() {
        return reply("error: the station has requests waiting: try again");
    }
    let until = Instant::now() + ANSWER_TIMEOUT;
    while !closing.load(Ordering::Relaxed) && Instant::now() < until {
        match answer.recv_timeout(STOP_CHECK) {
            Ok(text) => return reply(&text),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    withdrawn.store(true, Ordering::Relaxed);
    reply("error: the station did not answer (stopped, or busy past the timeout): the request was withdrawn");
}

/// Sends `request` to the station whose state folder is `state_dir`; its answer, an error when
/// it is `error: …` or none came.
pub fn send(state_dir: &Path, request: &str) -> anyhow::Result<String> {
    let path = state_dir.join(SOCKET);
    let mut stream = {
        let (address, _dir) = address(state_dir)?;
        UnixStream::connect(&address)
            .with_context(|| format!("{}: no station listens there (is it running?)", path.display()))?
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT + REQUEST_TIMEOUT)).context("control socket")?;
    stream.write_all(format!("{request}\n").as_bytes()).context("control socket: cannot send")?;
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
        // One line: what follows the newline is not part of the request.
        let error = send(dir.path(), "recipe\nb").unwrap_err().to_string();
        assert!(error.contains("unknown request `recipe`"), "{error}");
        // Clients that connect and say nothing delay no one else.
        let silent: Vec<UnixStream> = (0..5).map(|_| UnixStream::connect(server.path()).unwrap()).collect();
        let asked = Instant::now();
        let client = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || send(&dir, "status")
        });
        let request = loop {
            if let Some(request) = server.poll() {
                break request;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        request.answer(Ok("up".into()));
        assert_eq!(client.join().unwrap().unwrap(), "up");
        assert!(asked.elapsed() < REQUEST_TIMEOUT, "answered while the silent clients wait");
        drop(silent);
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
    fn a_state_folder_too_deep_for_a_socket_address_still_gets_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let server = ControlServer::bind(&deep).unwrap();
        assert!(deep.join(SOCKET).exists());
        let client = std::thread::spawn(move || send(&deep, "status"));
        let request = loop {
            if let Some(request) = server.poll() {
                break request;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        request.answer(Ok("fine".into()));
        assert_eq!(client.join().unwrap().unwrap(), "fine");
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
