//! Test harness shared by the integration tests: starts a real `ringkv`
//! process on a free port and a temporary data dir, and talks to it either
//! through the `redis` crate or through [`Raw`], a byte-level RESP client that
//! shows replies exactly as they arrive (simple string vs bulk, `$-1` vs `_`).
//!
//! Nothing here sleeps for a fixed time where it can poll: waits go through
//! [`wait_until`] or read deadlines.

#![allow(dead_code)]

use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// How long a server may take to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a reply may take before a raw read gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to exit after SHUTDOWN, SIGTERM or SIGKILL.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `ringkv` process with its own temporary data dir.
pub struct Server {
    child: Option<Child>,
    dir: TempDir,
    args: Vec<String>,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `ringkv --port 0 --data-dir <tempdir>` plus `args` and waits for
    /// its ready line.
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("ringkv-test-")
            .tempdir()
            .expect("create temp data dir");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn(dir.path(), &args, &log);
        Server {
            child: Some(child),
            dir,
            args,
            addr,
            log,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The data dir (the same across [`Server::restart`]).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A `redis` crate client for this server (password included when the
    /// server was started with `--requirepass`).
    pub fn client(&self) -> redis::Client {
        let url = match self.password() {
            Some(pass) => format!("redis://:{pass}@{}/", self.addr),
            None => self.url(),
        };
        redis::Client::open(url).expect("valid url")
    }

    /// A synchronous `redis` crate connection with a read timeout.
    pub fn conn(&self) -> redis::Connection {
        let conn = self
            .client()
            .get_connection_with_timeout(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", self.addr, self.log()));
        conn.set_read_timeout(Some(REPLY_TIMEOUT)).expect("set read timeout");
        conn
    }

    /// A raw RESP connection.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.addr)
    }

    /// Everything the server (and its predecessors on this data dir) logged.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    fn password(&self) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
            .filter(|p| !p.is_empty())
    }

    /// Waits for the process to exit on its own and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("server is running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "ringkv (pid {}) did not exit within {timeout:?}\n{}",
                    child.id(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn assert_clean_exit(&mut self, how: &str) {
        let status = self.wait_exit(EXIT_TIMEOUT);
        assert!(
            status.success(),
            "ringkv exited with {status} after {how}\n{}",
            self.log()
        );
    }

    /// SIGKILL, then reap the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait after SIGKILL");
    }

    /// SIGTERM; asserts the process exits with status 0.
    pub fn terminate(&mut self) {
        self.signal_clean_exit("TERM");
    }

    /// SIGINT (Ctrl-C); asserts the process exits with status 0.
    pub fn interrupt(&mut self) {
        self.signal_clean_exit("INT");
    }

    fn signal_clean_exit(&mut self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
        self.assert_clean_exit(&format!("SIG{signal}"));
    }

    /// SHUTDOWN (after AUTH if the server has a password); asserts the
    /// connection closes without a reply and the process exits with status 0.
    pub fn shutdown(&mut self) {
        let mut raw = self.raw();
        if let Some(pass) = self.password().map(str::to_owned) {
            assert_eq!(raw.cmd(&["AUTH", &pass]), Resp::ok());
        }
        raw.send_cmd(&["SHUTDOWN"]);
        let rest = raw.read_until_closed(EXIT_TIMEOUT);
        assert!(
            rest.is_empty(),
            "SHUTDOWN should close without a reply, got {:?}",
            String::from_utf8_lossy(&rest)
        );
        self.assert_clean_exit("SHUTDOWN");
    }

    /// A clean stop: SHUTDOWN, exit status 0.
    pub fn stop(&mut self) {
        self.shutdown();
    }

    /// Starts the server again on the same data dir with the same arguments
    /// (the port may change). The previous process must have exited.
    pub fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "restart() needs the previous process stopped (stop, terminate or kill9)"
        );
        self.log.lock().expect("log lock").push("---- restart ----".to_string());
        let (child, addr) = spawn(self.dir.path(), &self.args, &self.log);
        self.child = Some(child);
        self.addr = addr;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes ANSI colour sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `addr=HOST:PORT` field of a ready line.
pub fn ready_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("ringkv ready to accept connections") {
        return None;
    }
    let start = line.find("addr=")? + "addr=".len();
    let field = line[start..].split_whitespace().next()?;
    field.trim_matches('"').parse().ok()
}

/// Starts `ringkv --data-dir DIR` plus `args` (and `--port 0` unless they name a port), its log on a pipe.
pub fn spawn_child(dir: &Path, args: &[String]) -> Child {
    let port: &[&str] = if args.iter().any(|a| a == "--port") {
        &[]
    } else {
        &["--port", "0"]
    };
    Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(port)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv")
}

/// Spawns a server, appending its log lines to `log`; returns once it is ready.
fn spawn(dir: &Path, args: &[String], log: &Arc<Mutex<Vec<String>>>) -> (Child, SocketAddr) {
    let mut child = spawn_child(dir, args);
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    {
        // Drains stderr for the life of the process, so the pipe never fills.
        let log = log.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = strip_ansi(String::from_utf8_lossy(&line).trim_end());
                        log.lock().expect("log lock").push(text.clone());
                        let _ = tx.send(text);
                    }
                }
            }
        });
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let captured = |log: &Arc<Mutex<Vec<String>>>| log.lock().expect("log lock").join("\n");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = ready_addr(&line) {
                    return (child, addr);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ringkv {args:?} not ready within {START_TIMEOUT:?}; log:\n{}",
                    captured(log)
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait");
                panic!(
                    "ringkv {args:?} exited ({status}) before it was ready; log:\n{}",
                    captured(log)
                );
            }
        }
    }
}

/// Polls `check` every 10 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?}: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A RESP2/RESP3 reply as sent by the server, types kept apart.
#[derive(Clone, PartialEq)]
pub enum Resp {
    /// `+text`
    Simple(String),
    /// `-text`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$n` payload
    Bulk(Vec<u8>),
    /// `$-1` (RESP2 null bulk)
    Nil,
    /// `*-1` (RESP2 null array)
    NilArray,
    /// `*n`
    Array(Vec<Resp>),
    /// `_` (RESP3 null)
    Null,
    /// `%n`
    Map(Vec<(Resp, Resp)>),
    /// `~n`
    Set(Vec<Resp>),
    /// `>n`
    Push(Vec<Resp>),
    /// `,text`
    Double(String),
    /// `#t` / `#f`
    Boolean(bool),
    /// `(digits`
    BigNumber(String),
    /// `=n` with its 3-letter format and the text after `xxx:`
    Verbatim(String, Vec<u8>),
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(s) => write!(f, "-{s}"),
            Resp::Int(n) => write!(f, ":{n}"),
            Resp::Bulk(b) if b.len() > 200 => write!(f, "${}:{:?}...", b.len(), String::from_utf8_lossy(&b[..200])),
            Resp::Bulk(b) => write!(f, "${:?}", String::from_utf8_lossy(b)),
            Resp::Nil => write!(f, "$-1"),
            Resp::NilArray => write!(f, "*-1"),
            Resp::Array(items) => f.debug_list().entries(items).finish(),
            Resp::Null => write!(f, "_"),
            Resp::Map(pairs) => f.debug_map().entries(pairs.iter().map(|(k, v)| (k, v))).finish(),
            Resp::Set(items) => write!(f, "~{items:?}"),
            Resp::Push(items) => write!(f, ">{items:?}"),
            Resp::Double(d) => write!(f, ",{d}"),
            Resp::Boolean(b) => write!(f, "#{}", if *b { 't' } else { 'f' }),
            Resp::BigNumber(n) => write!(f, "({n}"),
            Resp::Verbatim(kind, text) => {
                write!(f, "={kind}:{:?}", String::from_utf8_lossy(text))
            }
        }
    }
}

impl Resp {
    /// `+OK`
    pub fn ok() -> Resp {
        Resp::Simple("OK".into())
    }

    /// `+text`
    pub fn simple(text: &str) -> Resp {
        Resp::Simple(text.into())
    }

    /// `$len payload`
    pub fn bulk(bytes: impl AsRef<[u8]>) -> Resp {
        Resp::Bulk(bytes.as_ref().to_vec())
    }

    /// `-text`
    pub fn err(text: &str) -> Resp {
        Resp::Error(text.into())
    }

    /// `:n`
    pub fn int(n: i64) -> Resp {
        Resp::Int(n)
    }

    /// An array of bulk strings.
    pub fn bulks<B: AsRef<[u8]>>(items: &[B]) -> Resp {
        Resp::Array(items.iter().map(Resp::bulk).collect())
    }

    /// The payload of a bulk string (or the text of a verbatim string).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Resp::Bulk(b) | Resp::Verbatim(_, b) => b,
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    /// The payload of a bulk/verbatim string as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.as_bytes().to_vec()).expect("UTF-8 payload")
    }

    /// The value of an integer reply.
    pub fn as_int(&self) -> i64 {
        match self {
            Resp::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    /// The items of an array (or set) reply.
    pub fn as_array(&self) -> &[Resp] {
        match self {
            Resp::Array(items) | Resp::Set(items) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    /// The text of an error reply.
    pub fn as_error(&self) -> &str {
        match self {
            Resp::Error(text) => text,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Key/value pairs of a RESP3 map, or of a RESP2 flat array of pairs.
    pub fn pairs(&self) -> Vec<(Resp, Resp)> {
        match self {
            Resp::Map(pairs) => pairs.clone(),
            Resp::Array(items) => {
                assert!(items.len() % 2 == 0, "odd flat map {self:?}");
                items.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
            }
            other => panic!("expected a map, got {other:?}"),
        }
    }

    /// The value for key `key` (bulk or simple string) in a map-like reply.
    pub fn get(&self, key: &str) -> Option<Resp> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| match k {
                Resp::Bulk(b) => b == key.as_bytes(),
                Resp::Simple(s) => s == key,
                _ => false,
            })
            .map(|(_, v)| v)
    }
}

/// A server with default flags and a raw connection to it.
pub fn start() -> (Server, Raw) {
    let server = Server::start(&[]);
    let raw = server.raw();
    (server, raw)
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The value of `name:` in an INFO text.
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Asserts TTL `key` is `want` seconds, or one less if a second boundary passed.
#[track_caller]
pub fn assert_ttl(raw: &mut Raw, key: &str, want: i64) {
    let ttl = raw.cmd(&["TTL", key]).as_int();
    assert!(ttl == want || ttl == want - 1, "TTL {key} = {ttl}, want {want}");
}

/// Asserts PTTL `key` is within `low..=high` milliseconds.
#[track_caller]
pub fn assert_pttl(raw: &mut Raw, key: &str, low: i64, high: i64) {
    let pttl = raw.cmd(&["PTTL", key]).as_int();
    assert!((low..=high).contains(&pttl), "PTTL {key} = {pttl}, want {low}..={high}");
}

/// `ERR invalid expire time in '<cmd>' command`
pub fn invalid_expire(cmd: &str) -> Resp {
    Resp::Error(format!("ERR invalid expire time in '{cmd}' command"))
}

/// `ERR wrong number of arguments for '<cmd>' command`
pub fn wrong_arity(cmd: &str) -> Resp {
    Resp::Error(format!("ERR wrong number of arguments for '{cmd}' command"))
}

/// A request as text for assertion messages.
pub fn show<A: AsRef<[u8]>>(args: &[A]) -> String {
    args.iter()
        .map(|a| format!("{:?}", String::from_utf8_lossy(a.as_ref())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Encodes a request as a RESP multibulk.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply at the start of `buf`: `Ok(None)` if incomplete, else the
/// reply and its length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], at: usize) -> Result<Option<(Resp, usize)>, String> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(cr) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[at + 1..at + cr];
    let next = at + cr + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || -> Result<i64, String> {
        text()
            .parse()
            .map_err(|_| format!("bad length/number {:?} after {:?}", text(), kind as char))
    };
    let reply = match kind {
        b'+' => (Resp::Simple(text()), next),
        b'-' => (Resp::Error(text()), next),
        b':' => (Resp::Int(number()?), next),
        b'_' => (Resp::Null, next),
        b',' => (Resp::Double(text()), next),
        b'(' => (Resp::BigNumber(text()), next),
        b'#' => (Resp::Boolean(line == b"t"), next),
        b'$' | b'=' | b'!' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Resp::Nil, next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(format!("bulk of {len} bytes not followed by CRLF"));
            }
            let payload = buf[next..end].to_vec();
            let reply = match kind {
                b'=' => {
                    let (format, body) = payload.split_at(4.min(payload.len()));
                    Resp::Verbatim(
                        String::from_utf8_lossy(&format[..format.len().saturating_sub(1)]).into_owned(),
                        body.to_vec(),
                    )
                }
                b'!' => Resp::Error(String::from_utf8_lossy(&payload).into_owned()),
                _ => Resp::Bulk(payload),
            };
            (reply, end + 2)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Resp::NilArray, next)));
            }
            let count = if kind == b'%' { 2 * len } else { len };
            let mut items = Vec::with_capacity(count as usize);
            let mut pos = next;
            for _ in 0..count {
                match parse_at(buf, pos)? {
                    Some((item, end)) => {
                        items.push(item);
                        pos = end;
                    }
                    None => return Ok(None),
                }
            }
            let reply = match kind {
                b'*' => Resp::Array(items),
                b'~' => Resp::Set(items),
                b'>' => Resp::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Resp::Map(pairs)
                }
            };
            (reply, pos)
        }
        other => return Err(format!("unknown reply type byte {:?}", other as char)),
    };
    Ok(Some(reply))
}

/// A raw TCP connection speaking RESP: send any bytes, read replies exactly.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream =
            TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).expect("write timeout");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// The socket, for tests that need it directly.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Writes one request encoded as a multibulk.
    pub fn send_cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send(&encode(args));
    }

    /// Sends a request and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        self.send_cmd(args);
        self.read_reply()
    }

    /// Sends a request and asserts its reply.
    #[track_caller]
    pub fn expect<A: AsRef<[u8]>>(&mut self, args: &[A], expected: Resp) {
        let got = self.cmd(args);
        assert_eq!(got, expected, "reply to {}", show(args));
    }

    /// Reads one reply; panics on timeout, EOF or a malformed reply.
    pub fn read_reply(&mut self) -> Resp {
        let bytes = self.read_reply_bytes();
        parse(&bytes).expect("valid").expect("complete").0
    }

    /// Reads one reply and returns its exact bytes.
    pub fn read_reply_bytes(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match parse(&self.buf) {
                Ok(Some((_, len))) => return self.buf.drain(..len).collect(),
                Ok(None) => {}
                Err(e) => panic!("malformed reply ({e}): {:?}", String::from_utf8_lossy(&self.buf)),
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => panic!(
                    "connection closed before a complete reply; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Fill::TimedOut => panic!(
                    "no complete reply within {REPLY_TIMEOUT:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Reads one reply, or `None` if the connection closes first; panics on timeout.
    pub fn try_read_reply(&mut self) -> Option<Resp> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some((reply, len)) = parse(&self.buf).expect("valid reply") {
                self.buf.drain(..len);
                return Some(reply);
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => return None,
                Fill::TimedOut => panic!(
                    "no complete reply within {REPLY_TIMEOUT:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Reads until the server closes the connection (EOF or reset) and
    /// returns whatever arrived before; panics if it stays open past `timeout`.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => return std::mem::take(&mut self.buf),
                Fill::TimedOut => panic!(
                    "connection still open after {timeout:?}; received {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Asserts the server closes the connection (EOF or reset) without
    /// sending anything more.
    pub fn assert_closed(&mut self) {
        let rest = self.read_until_closed(REPLY_TIMEOUT);
        assert!(
            rest.is_empty(),
            "expected the connection to close, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// True if nothing arrives and the connection stays open for `quiet`.
    pub fn is_quiet_for(&mut self, quiet: Duration) -> bool {
        let deadline = Instant::now() + quiet;
        matches!(self.fill(deadline), Fill::TimedOut) && self.buf.is_empty()
    }

    fn fill(&mut self, deadline: Instant) -> Fill {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Fill::TimedOut;
        }
        self.stream.set_read_timeout(Some(left)).expect("read timeout");
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Fill::Closed,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Fill::TimedOut,
            Err(e) if e.kind() == ErrorKind::Interrupted => Fill::Data,
            Err(_) => Fill::Closed,
        }
    }
}

enum Fill {
    Data,
    Closed,
    TimedOut,
}

/// Shorthand for building request argument lists of mixed byte strings.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        [$(::std::convert::AsRef::<[u8]>::as_ref(&$arg)),*]
    };
}

/// A port that was free a moment ago (for configs that must name ports
/// before the processes start). Picked below Linux's ephemeral range
/// (32768+), so outgoing connections of running nodes cannot be holding it
/// by the time a node binds it, and never twice in one test process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().expect("port list");
    loop {
        let port = 20_000 + (rand_u32() % 12_000) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// A random number without a crate: the std hasher's random keys.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish() as u32
}

/// The secret test clusters share.
pub const TEST_SECRET: &str = "test-cluster-secret";

/// Several `ringkv` processes that form one cluster on 127.0.0.1, each with
/// its own data dir, debug commands enabled.
pub struct Cluster {
    /// The members, in config order (`node1`, `node2`, ...).
    pub nodes: Vec<Server>,
    _conf: TempDir,
}

impl Cluster {
    /// Starts `size` members with N = min(3, size), R = W = 2 (or 1), plus
    /// `args` on every node; returns once every member reaches every other.
    pub fn start(size: usize, args: &[&str]) -> Cluster {
        let conf = tempfile::Builder::new()
            .prefix("ringkv-cluster-")
            .tempdir()
            .expect("config dir");
        let resp: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let peer: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let replicas = size.min(3);
        let quorum = if replicas >= 2 { 2 } else { 1 };
        let mut members = String::new();
        for (i, (resp, peer)) in resp.iter().zip(&peer).enumerate() {
            members.push_str(&format!(
                "\n[[cluster.members]]\nid = \"node{}\"\naddress = \"127.0.0.1:{resp}\"\npeer = \"127.0.0.1:{peer}\"\n",
                i + 1,
            ));
        }
        let mut nodes = Vec::new();
        for (i, port) in resp.iter().enumerate() {
            let path = conf.path().join(format!("node{}.toml", i + 1));
            let text = format!(
                "[server]\nenable_debug_command = true\n\n[cluster]\nnode_id = \"node{}\"\nsecret = \"{TEST_SECRET}\"\n\
                 replicas = {replicas}\nread_quorum = {quorum}\nwrite_quorum = {quorum}\nrequest_timeout_ms = 2000\n{members}",
                i + 1
            );
            std::fs::write(&path, text).expect("write node config");
            let port = port.to_string();
            let path = path.display().to_string();
            let mut all = vec!["--config", path.as_str(), "--port", port.as_str()];
            all.extend_from_slice(args);
            nodes.push(Server::start(&all));
        }
        let cluster = Cluster { nodes, _conf: conf };
        cluster.wait_connected();
        cluster
    }

    /// Member `i` (0-based).
    pub fn node(&self, i: usize) -> &Server {
        &self.nodes[i]
    }

    /// Waits until every running member reaches every other.
    pub fn wait_connected(&self) {
        let size = self.nodes.len();
        for node in &self.nodes {
            wait_until(START_TIMEOUT, "every member reaches every other", || {
                reachable(node) == size
            });
        }
    }
}

/// How many members (itself included) `node` can reach now.
pub fn reachable(node: &Server) -> usize {
    let info = node.raw().cmd(&["CLUSTER", "INFO"]).text();
    info_field(&info, "ringkv_reachable_nodes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
