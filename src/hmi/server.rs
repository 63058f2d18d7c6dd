//! The HTTP server: hyper's HTTP/1.1 on a single-threaded tokio runtime of its own thread,
//! with the limits that keep a bad client from costing more than its own connection: a bounded
//! number of connections (more are answered 503 and closed), a request head of at most
//! [`HEAD_LIMIT`] bytes that must arrive within the request timeout, bodies of at most
//! [`BODY_LIMIT`] bytes within it too, and a live-view stream that ends when its client stops
//! reading for [`STALL_LIMIT`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::api;
use super::commission::Commissioning;
use super::live::Live;
use super::{HttpSettings, StationFacts};
use crate::station::status::StatusBoard;
use crate::storage::owned::{FolderKind, OwnedDir};
use crate::storage::secret::{pem_certificates, pem_private_key, secret_text};

/// Largest request head (request line and headers).
pub(crate) const HEAD_LIMIT: usize = 16 << 10;
/// Largest request body.
pub(crate) const BODY_LIMIT: usize = 16 << 10;
/// A client whose connection takes no byte of an answer for this long is disconnected (a
/// live-view client that stopped reading, say).
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Each connection's kernel send buffer: small, so that a client that stops reading is found
/// out within a few frames (not after megabytes) and a slow viewer is never minutes behind.
const SEND_BUFFER: usize = 64 << 10;
/// Shortest token accepted.
const TOKEN_MIN: usize = 16;
/// The boundary between the live view's frames.
const BOUNDARY: &str = "clipadaframe";
/// The page, served from the binary.
const PAGE: &str = include_str!("page.html");

/// A response body: whole, or the live view's stream.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What every request handler may use.
pub(crate) struct Shared {
    pub board: Arc<StatusBoard>,
    pub live: Arc<Live>,
    pub facts: StationFacts,
    /// The configuration as JSON, secrets' file names redacted.
    pub config: serde_json::Value,
    pub failures: Option<OwnedDir>,
    pub commission: Commissioning,
    token: Option<Vec<u8>>,
    request_timeout: Duration,
    /// Host names the server answers to besides IP addresses and `localhost`.
    host_names: Vec<String>,
    /// Live-view streams may take at most half the connections: the page and the API keep the
    /// rest.
    streams: Arc<tokio::sync::Semaphore>,
    pub started: Instant,
}

/// The running server; stops accepting and ends its streams when dropped.
pub(crate) struct Server {
    address: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    live: Arc<Live>,
    jobs_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.live.stop();
        self.jobs_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Server {
    /// Binds `settings.bind`, reads the token and certificate, and serves on a thread of its own.
    pub(crate) fn start(
        settings: &HttpSettings,
        board: Arc<StatusBoard>,
        facts: StationFacts,
    ) -> anyhow::Result<Server> {
        let token = match &settings.token_file {
            Some(path) => {
                let token = secret_text(path).context("http.token_file")?;
                anyhow::ensure!(
                    token.trim().len() >= TOKEN_MIN,
                    "http.token_file: {}: a token of at least {TOKEN_MIN} characters",
                    path.display()
                );
                Some(token.trim().as_bytes().to_vec())
            }
            None => None,
        };
        let tls = settings.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
        let config = api::redacted_config(&facts.config_file)?;
        let failures = match &facts.failures_dir {
            Some(dir) => Some(OwnedDir::claim(dir, FolderKind::FailedParts).context("log.failures_dir")?),
            None => None,
        };
        let listener =
            std::net::TcpListener::bind(&settings.bind).with_context(|| format!("http.bind: {}", settings.bind))?;
        listener.set_nonblocking(true).context("http.bind")?;
        let address = listener.local_addr().context("http.bind")?;
        let live = Live::start(board.clone(), settings.stream_fps).context("cannot start the live view")?;
        let jobs_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let commission = Commissioning::new(board.clone(), live.clone(), &facts, jobs_stop.clone());
        let shared = Arc::new(Shared {
            board,
            live: live.clone(),
            facts,
            config,
            failures,
            commission,
            token,
            request_timeout: settings.request_timeout,
            host_names: settings.host_names.iter().map(|h| h.to_ascii_lowercase()).collect(),
            streams: Arc::new(tokio::sync::Semaphore::new((settings.max_connections / 2).max(1))),
            started: Instant::now(),
        });
        let (shutdown, stopped) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("cannot start the HTTP server's runtime")?;
        let limit = settings.max_connections;
        std::thread::Builder::new()
            .name("clipada-http".into())
            .spawn(move || runtime.block_on(accept(listener, shared, tls, limit, stopped)))
            .context("cannot start the HTTP server's thread")?;
        let scheme = if settings.tls.is_some() { "https" } else { "http" };
        tracing::info!("operator interface on {scheme}://{address}/");
        Ok(Server { address, shutdown, live, jobs_stop })
    }

    /// The address it listens on.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }
}

/// A TLS acceptor for HTTP/1.1 with the certificate chain at `cert` and the key at `key`.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = pem_certificates(cert).context("http.tls.cert")?;
    let key = pem_private_key(key).context("http.tls.key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("http.tls: protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("http.tls: the certificate and key do not make a pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until shut down: at most `limit` at once, each on a task of its own.
async fn accept(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limit: usize,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!("operator interface: {e}"),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    loop {
        let (stream, _) = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!("operator interface: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&stream, SEND_BUFFER);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            let timeout = shared.request_timeout;
            match tls {
                None => serve(stream, shared).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        serve(stream, shared).await;
                    }
                }
            }
            drop(slot);
        });
    }
}

/// Answers a connection over the limit with 503 and closes it.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 21\r\n\r\ntoo many connections\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
}

/// Serves HTTP/1.1 on one connection; closes it when a write has waited for the client for
/// [`STALL_LIMIT`] (a client that stopped reading).
async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: I, shared: Arc<Shared>) {
    let timeout = shared.request_timeout;
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(secure(handle(&shared, request).await)) }
    });
    let blocked = Arc::new(std::sync::Mutex::new(None));
    let io = WriteWatch { io, blocked_since: blocked.clone() };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(HEAD_LIMIT)
        .serve_connection(TokioIo::new(io), service);
    let stalled = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let since = *crate::station::status::lock(&blocked);
            if since.is_some_and(|at: Instant| at.elapsed() > STALL_LIMIT) {
                return;
            }
        }
    };
    tokio::select! {
        _ = connection => {}
        () = stalled => {}
    }
}

/// A connection's stream that notes since when its writes wait for the client.
struct WriteWatch<I> {
    io: I,
    blocked_since: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl<I> WriteWatch<I> {
    fn note<T>(&self, poll: &std::task::Poll<T>) {
        let mut since = crate::station::status::lock(&self.blocked_since);
        match poll {
            std::task::Poll::Pending => {
                since.get_or_insert_with(Instant::now);
            }
            std::task::Poll::Ready(_) => *since = None,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteWatch<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(context, buffer)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteWatch<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_write(context, bytes);
        self.note(&poll);
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_flush(context);
        self.note(&poll);
        poll
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(context)
    }
}

/// Adds the headers every answer carries: nothing cached, sniffed or framed; scripts and
/// images from the station only.
fn secure(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

/// A whole answer.
pub(crate) fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    answer(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
}

/// A refusal: `{"error": why}`.
pub(crate) fn refusal(status: StatusCode, why: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": why.to_string() }))
}

/// Whether `path` is one the server could mean: plain ASCII segments, none of them `.` or
/// `..`, nothing percent-encoded, no backslash or empty segment. Every file a request can reach
/// is named by the server's own routes, so nothing else needs decoding.
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b'\\'))
        && !path[1..].split('/').any(|segment| matches!(segment, "." | ".."))
        && !path.contains("//")
}

/// The value of query parameter `name`, if any.
fn query<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// Whether `given` equals `expected`, in time that depends only on `given`'s length.
pub(crate) fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(given.len() != expected.len());
    for (i, byte) in given.iter().enumerate() {
        difference |= byte ^ expected.get(i).copied().unwrap_or(!byte);
    }
    difference == 0
}

/// Refuses a change unless the request carries the configured token.
fn authorize(shared: &Shared, request: &Request<Incoming>) -> Result<(), Box<Response<Body>>> {
    let Some(expected) = &shared.token else {
        return Err(Box::new(refusal(
            StatusCode::FORBIDDEN,
            "changes are off: this station's [http] has no token_file, so its interface is read-only",
        )));
    };
    // The scheme's name is case-insensitive (RFC 7235); the token is not.
    let given = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes()).and_then(|v| {
        let (scheme, token) = v.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
    });
    match given {
        Some(given) if same_token(given, expected) => Ok(()),
        _ => {
            let mut response =
                refusal(StatusCode::UNAUTHORIZED, "this needs the station's token (Authorization: Bearer …)");
            response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
            Err(Box::new(response))
        }
    }
}

/// The request's body as JSON (empty: `{}`), at most [`BODY_LIMIT`] bytes, within the
/// request timeout.
async fn body_json(shared: &Shared, request: Request<Incoming>) -> Result<serde_json::Value, Box<Response<Body>>> {
    let limited = Limited::new(request.into_body(), BODY_LIMIT);
    let collected = match tokio::time::timeout(shared.request_timeout, limited.collect()).await {
        Err(_) => return Err(Box::new(refusal(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Box::new(refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a body of at most {BODY_LIMIT} bytes"),
            )));
        }
        Ok(Err(e)) => return Err(Box::new(refusal(StatusCode::BAD_REQUEST, e))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if collected.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({}));
    }
    match serde_json::from_slice::<serde_json::Value>(&collected) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err(Box::new(refusal(StatusCode::BAD_REQUEST, "the body must be a JSON object"))),
        Err(e) => Err(Box::new(refusal(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))),
    }
}

/// Whether the request's one `Host` (and an absolute URI's authority) names this station: an
/// IP address (with a port or not),
/// `localhost`, or one of `http.host_names`. Anything else is refused, so that a page of another
/// site whose name was made to point here (DNS rebinding) cannot read the station.
fn known_host(shared: &Shared, request: &Request<Incoming>) -> bool {
    let mut hosts = request.headers().get_all(hyper::header::HOST).iter();
    let (Some(host), None) = (hosts.next().and_then(|h| h.to_str().ok()), hosts.next()) else {
        return false;
    };
    let known = |name: &str| {
        name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || shared.host_names.iter().any(|known| name.eq_ignore_ascii_case(known))
    };
    // An absolute-form request names its host in the URI too: both must be this station.
    known(host_name(host)) && request.uri().authority().is_none_or(|a| known(host_name(a.as_str())))
}

/// The name in a `Host` value, without its port and an IPv6 address's brackets: `[::1]:8080`,
/// `10.0.0.5:8080`, `station:8080` (not the colons of a bare IPv6 address).
fn host_name(host: &str) -> &str {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    };
    name.trim_start_matches('[').trim_end_matches(']')
}

/// Routes one request.
async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    if !known_host(shared, &request) {
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown Host: ask by the station's IP address, or add its name to `http.host_names`",
        );
    }
    let path = request.uri().path().to_string();
    if !plain_path(&path) {
        return refusal(StatusCode::BAD_REQUEST, "a path of plain segments (no `..`, `%`, `\\` or empty segments)");
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let method = request.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    match (read, segments.as_slice()) {
        (true, [""]) => answer(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        (true, ["metrics"]) => answer(StatusCode::OK, "text/plain; version=0.0.4", api::metrics(shared)),
        (true, ["api", "v1", "status"]) => json(StatusCode::OK, &api::status(shared)),
        (true, ["api", "v1", "counters"]) => json(StatusCode::OK, &api::counters(shared)),
        (true, ["api", "v1", "config"]) => json(StatusCode::OK, &shared.config),
        (true, ["api", "v1", "scores"]) => json(StatusCode::OK, &api::scores(shared)),
        (true, ["api", "v1", "results"]) => {
            let limit = query(&request, "limit").map(str::parse::<usize>);
            match limit {
                Some(Err(_)) => refusal(StatusCode::BAD_REQUEST, "limit: a whole number"),
                Some(Ok(n)) => json(StatusCode::OK, &api::results(shared, n)),
                None => json(StatusCode::OK, &api::results(shared, 20)),
            }
        }
        (true, ["api", "v1", "results", sequence, "overlay.jpg"]) => {
            match sequence.parse::<u64>().ok().and_then(|s| shared.live.thumbnail(s)) {
                Some(jpeg) => answer(StatusCode::OK, "image/jpeg", jpeg),
                None => refusal(StatusCode::NOT_FOUND, "no image of that result is kept"),
            }
        }
        (true, ["api", "v1", "live.jpg"]) => match shared.live.latest() {
            Some(frame) => answer(StatusCode::OK, "image/jpeg", frame.jpeg),
            None => refusal(StatusCode::NOT_FOUND, "no part judged yet"),
        },
        (true, ["api", "v1", "live.mjpg"]) => stream(shared),
        (true, ["api", "v1", "failures"]) => json(StatusCode::OK, &api::failures(shared)),
        (true, ["api", "v1", "failures", name]) => api::failure_image(shared, name),
        (true, ["api", "v1", "commissioning"]) => json(StatusCode::OK, &shared.commission.state()),
        (false, ["api", "v1", ..]) if method == Method::POST => {
            if let Err(response) = authorize(shared, &request) {
                return *response;
            }
            let action: Vec<String> = segments[2..].iter().map(|s| s.to_string()).collect();
            let body = match body_json(shared, request).await {
                Ok(body) => body,
                Err(response) => return *response,
            };
            let action: Vec<&str> = action.iter().map(String::as_str).collect();
            match shared.commission.act(shared, &action, &body) {
                Ok(value) => json(StatusCode::ACCEPTED, &value),
                Err((status, why)) => refusal(status, why),
            }
        }
        (true, _) => refusal(StatusCode::NOT_FOUND, "no such page"),
        (false, _) => {
            let mut response = refusal(StatusCode::METHOD_NOT_ALLOWED, "reads are GET; changes are POST under /api/v1");
            response.headers_mut().insert("allow", HeaderValue::from_static("GET, HEAD, POST"));
            response
        }
    }
}

/// The live view as a multipart JPEG stream: each new frame as it is encoded; a client that
/// takes none for [`STALL_LIMIT`] is dropped. At most half the connections stream.
fn stream(shared: &Shared) -> Response<Body> {
    let Ok(slot) = shared.streams.clone().try_acquire_owned() else {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, "as many live views as this station serves are open");
    };
    let mut frames = shared.live.subscribe();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            let frame = frames.borrow_and_update().clone();
            if let Some(frame) = frame {
                let head = format!(
                    "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Result: {}\r\n\r\n",
                    frame.jpeg.len(),
                    frame.sequence
                );
                let mut part = Vec::with_capacity(head.len() + frame.jpeg.len() + 2);
                part.extend_from_slice(head.as_bytes());
                part.extend_from_slice(&frame.jpeg);
                part.extend_from_slice(b"\r\n");
                match tokio::time::timeout(STALL_LIMIT, sender.send(Bytes::from(part))).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            tokio::select! {
                changed = frames.changed() => if changed.is_err() { return },
                _ = sender.closed() => return,
            }
        }
    });
    let body = FrameStream(receiver);
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    let content_type = format!("multipart/x-mixed-replace; boundary={BOUNDARY}");
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_str(&content_type).expect("ASCII"));
    response
}

/// A body of the frames a task sends.
struct FrameStream(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for FrameStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(context).map(|part| part.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_token(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_token(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!same_token(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_token(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!same_token(b"", b"0123456789abcdef"));
    }

    #[test]
    fn host_names_are_split_from_their_ports() {
        assert_eq!(host_name("10.0.0.5:8080"), "10.0.0.5");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("station.plant.lan"), "station.plant.lan");
        assert_eq!(host_name("localhost:80"), "localhost");
    }

    #[test]
    fn only_plain_paths_are_routed() {
        for good in ["/", "/api/v1/status", "/api/v1/failures/2026-01-01T000000.000Z-00000001-frame.png"] {
            assert!(plain_path(good), "{good}");
        }
        for bad in ["/api/../etc/passwd", "/api/v1/failures/..", "/%2e%2e/x", "/a//b", "/a\\b", "/./a", "/é"] {
            assert!(!plain_path(bad), "{bad}");
        }
    }
}
