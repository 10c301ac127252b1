//! Bus tests over loopback TCP with port-0 listeners. Waits poll a condition against a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::*;

const LONG: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(15);
const SECRET: &[u8] = b"cluster secret";

#[derive(Debug, Serialize, Deserialize)]
enum Req {
    Echo(u64),
    /// Answers once the service's `gate` has a permit.
    Gated(u64),
    Never,
    Panic,
    Blob(Vec<u8>),
    /// Asks for a response of this many bytes.
    Big(usize),
    /// Answered by `handle_now`; `handle` refuses it.
    Now(u64),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Resp {
    /// `seq` counts the Echo handlers completed on the answering node, this one included.
    Echo {
        value: u64,
        from: PeerId,
        seq: u64,
    },
    Gated(u64),
    Blob(usize),
    Big(Vec<u8>),
    Now(u64),
}

struct TestService {
    gate: Semaphore,
    completed: AtomicU64,
    /// `Now` requests handled.
    quick: AtomicU64,
    /// Highest `completed` seen by a `before_reply`.
    barrier_seen: AtomicU64,
    barriers: AtomicU64,
    /// While set, `before_reply` waits for a permit of `reply_gate`.
    hold_replies: AtomicBool,
    in_barrier: AtomicBool,
    reply_gate: Semaphore,
}

impl TestService {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            gate: Semaphore::new(0),
            completed: AtomicU64::new(0),
            quick: AtomicU64::new(0),
            barrier_seen: AtomicU64::new(0),
            barriers: AtomicU64::new(0),
            hold_replies: AtomicBool::new(false),
            in_barrier: AtomicBool::new(false),
            reply_gate: Semaphore::new(0),
        })
    }
}

impl Service for TestService {
    type Request = Req;
    type Response = Resp;

    async fn handle(self: Arc<Self>, from: PeerId, request: Req) -> Resp {
        match request {
            Req::Echo(value) => {
                let seq = self.completed.fetch_add(1, Ordering::SeqCst) + 1;
                Resp::Echo { value, from, seq }
            }
            Req::Gated(value) => {
                let _permit = self.gate.acquire().await.expect("gate open");
                Resp::Gated(value)
            }
            Req::Never => std::future::pending().await,
            Req::Panic => panic!("handler panic requested by the test"),
            Req::Blob(blob) => Resp::Blob(blob.len()),
            Req::Big(size) => Resp::Big(vec![7; size]),
            Req::Now(_) => panic!("a quick request reached the task-per-request path"),
        }
    }

    fn handle_now(&self, _from: PeerId, request: Req) -> Result<Resp, Req> {
        match request {
            Req::Now(value) => {
                self.quick.fetch_add(1, Ordering::SeqCst);
                Ok(Resp::Now(value))
            }
            other => Err(other),
        }
    }

    async fn before_reply(&self) {
        self.barriers.fetch_add(1, Ordering::SeqCst);
        self.barrier_seen
            .fetch_max(self.completed.load(Ordering::SeqCst), Ordering::SeqCst);
        if self.hold_replies.load(Ordering::SeqCst) {
            self.in_barrier.store(true, Ordering::SeqCst);
            let _permit = self.reply_gate.acquire().await.expect("reply gate open");
        }
    }
}

struct Node {
    bus: Arc<Bus<TestService>>,
    service: Arc<TestService>,
}

fn config(me: PeerId, addresses: &[SocketAddr], secret: &[u8]) -> BusConfig {
    BusConfig {
        me,
        names: (0..addresses.len()).map(|i| format!("node{i}")).collect(),
        addresses: addresses.to_vec(),
        secret: secret.to_vec(),
        max_frame: 1 << 20,
        connect_timeout: Duration::from_secs(1),
        redial: Redial::default(),
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// Shows the bus's logs with `RUST_LOG=debug cargo test -- --nocapture`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Starts one node per secret; returns them with their addresses.
async fn cluster_with(secrets: &[&[u8]]) -> (Vec<Node>, Vec<SocketAddr>) {
    init_logs();
    let mut listeners = Vec::new();
    for _ in secrets {
        listeners.push(bind().await);
    }
    let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
    let nodes = listeners
        .into_iter()
        .zip(secrets)
        .enumerate()
        .map(|(i, (listener, secret))| start_node(i, &addresses, secret, listener))
        .collect();
    (nodes, addresses)
}

fn start_node(me: usize, addresses: &[SocketAddr], secret: &[u8], listener: TcpListener) -> Node {
    let service = TestService::new();
    let me = PeerId::try_from(me).expect("small cluster");
    let bus = Bus::start(config(me, addresses, secret), listener, service.clone());
    Node { bus, service }
}

/// A cluster of `n` nodes sharing the secret, fully connected.
async fn cluster(n: usize) -> (Vec<Node>, Vec<SocketAddr>) {
    let (nodes, addresses) = cluster_with(&vec![SECRET; n]).await;
    for (a, node) in nodes.iter().enumerate() {
        for b in 0..n {
            eventually(&format!("{a} reaches {b}"), || node.bus.is_reachable(id(b))).await;
        }
    }
    (nodes, addresses)
}

fn id(i: usize) -> PeerId {
    PeerId::try_from(i).expect("small cluster")
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn eventually_async<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn echo(bus: &Bus<TestService>, to: PeerId, value: u64) -> Result<u64, BusError> {
    match bus.call(to, Req::Echo(value), Duration::from_secs(5)).await? {
        Resp::Echo { value, .. } => Ok(value),
        other => panic!("unexpected response {other:?}"),
    }
}

/// Reads until the server closes the connection; fails if it stays open past the deadline.
async fn assert_closed_by_server(mut stream: TcpStream) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the bus kept a stranger's connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_between_all_pairs() {
    let (nodes, _) = cluster(3).await;
    for (a, node) in nodes.iter().enumerate() {
        for b in 0..nodes.len() {
            let value = (a * 10 + b) as u64;
            match node.bus.call(id(b), Req::Echo(value), Duration::from_secs(5)).await {
                Ok(Resp::Echo { value: v, from, .. }) => {
                    assert_eq!(v, value);
                    assert_eq!(from, id(a), "the answering side sees who called");
                }
                other => panic!("{a} -> {b}: {other:?}"),
            }
        }
    }
    let status = nodes[0].bus.peer_status(1);
    assert!(status.connected && !status.isolated && status.since_unix_ms > 0);
    assert_eq!(
        (status.requests_sent, status.responses_received, status.failures),
        (1, 1, 0)
    );
    assert_eq!(status.inbound_connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_over_one_connection() {
    const CALLS: u64 = 10_000;
    let (nodes, _) = cluster(2).await;
    let mut calls = JoinSet::new();
    for i in 0..CALLS {
        let bus = nodes[0].bus.clone();
        calls.spawn(async move { (i, echo(&bus, 1, i * 3 + 1).await) });
    }
    let mut answered = 0;
    while let Some(joined) = calls.join_next().await {
        let (i, result) = joined.expect("call task");
        assert_eq!(result.expect("call"), i * 3 + 1);
        answered += 1;
    }
    assert_eq!(answered, CALLS);
    assert_eq!(
        nodes[1].bus.peer_status(0).inbound_connections,
        1,
        "all calls shared one connection"
    );
    let barriers = nodes[1].service.barriers.load(Ordering::SeqCst);
    assert!(
        (1..CALLS).contains(&barriers),
        "responses were coalesced into batches ({barriers} batches)"
    );
    let status = nodes[0].bus.peer_status(1);
    assert_eq!(
        (status.requests_sent, status.responses_received, status.failures),
        (CALLS, CALLS, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_does_not_block_a_fast_one() {
    let (nodes, _) = cluster(2).await;
    let bus = nodes[0].bus.clone();
    let slow = tokio::spawn(async move { bus.call(1, Req::Gated(7), LONG).await });
    eventually("the slow request is being handled", || {
        nodes[1].service.gate.available_permits() == 0
    })
    .await;
    for i in 0..20 {
        assert_eq!(echo(&nodes[0].bus, 1, i).await.expect("fast call"), i);
    }
    assert!(!slow.is_finished(), "the slow call cannot finish before its gate opens");
    nodes[1].service.gate.add_permits(1);
    assert_eq!(slow.await.expect("task").expect("slow call"), Resp::Gated(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_on_both_sides() {
    let (nodes, _) = cluster_with(&[b"secret one", b"secret two"]).await;
    for (me, other) in [(0, 1), (1, 0)] {
        let node = &nodes[me];
        eventually(&format!("{me} rejects {other}'s proof"), || {
            node.bus
                .peer_status(other)
                .last_error
                .is_some_and(|e| e.contains("cluster secret"))
        })
        .await;
        eventually(&format!("{me} refuses {other}'s dial"), || {
            node.bus.refused_connections() >= 1
        })
        .await;
    }
    for (me, other) in [(0, 1), (1, 0)] {
        assert!(!nodes[me].bus.is_reachable(other));
        assert!(!nodes[me].bus.peer_status(other).connected);
        let result = nodes[me].bus.call(other, Req::Echo(1), LONG).await;
        assert!(matches!(result, Err(BusError::Unreachable)), "{result:?}");
        assert_eq!(nodes[1 - me].service.completed.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_the_bus_keeps_working() {
    let (nodes, addresses) = cluster(2).await;
    let target = addresses[0];

    // A Redis client: its first bytes read as an absurd frame length.
    let mut redis = TcpStream::connect(target).await.expect("connect");
    redis.write_all(b"*1\r\n$4\r\nPING\r\n").await.expect("write");
    assert_closed_by_server(redis).await;

    // A small frame of garbage.
    let mut garbage = TcpStream::connect(target).await.expect("connect");
    garbage
        .write_all(&[0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        .await
        .expect("write");
    assert_closed_by_server(garbage).await;

    // A well-formed hello from a name that is not a member.
    let mut impostor = TcpStream::connect(target).await.expect("connect");
    let hello = (*b"ringkv-bus", handshake::PROTOCOL_VERSION, ("mallory", [0u8; 32]));
    let mut buf = bytes::BytesMut::new();
    frame::encode_frame(&mut buf, &hello, 1024).expect("encode");
    impostor.write_all(&buf).await.expect("write");
    assert_closed_by_server(impostor).await;

    // A client that connects and says nothing is dropped after the handshake timeout.
    let silent = TcpStream::connect(target).await.expect("connect");
    assert_closed_by_server(silent).await;

    eventually("four refusals are counted", || nodes[0].bus.refused_connections() >= 4).await;
    assert_eq!(echo(&nodes[1].bus, 0, 5).await.expect("member call"), 5);
    assert_eq!(echo(&nodes[0].bus, 1, 6).await.expect("member call"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart_fails_fast_then_reconnects() {
    let (mut nodes, addresses) = cluster(2).await;
    assert_eq!(echo(&nodes[0].bus, 1, 1).await.expect("before restart"), 1);

    let bus = nodes[0].bus.clone();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        (bus.call(1, Req::Never, LONG).await, started.elapsed())
    });
    eventually("the call is in flight", || {
        nodes[0].bus.peer_status(1).requests_sent == 2
    })
    .await;

    let old = nodes.pop().expect("node 1");
    old.bus.stop();
    drop(old);

    let (result, waited) = waiting.await.expect("task");
    assert!(matches!(result, Err(BusError::Closed)), "{result:?}");
    assert!(
        waited < LONG / 2,
        "pending call failed on connection loss, not at its timeout ({waited:?})"
    );

    eventually("peer 1 is seen down", || !nodes[0].bus.is_reachable(1)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let result = nodes[0].bus.call(1, Req::Echo(0), LONG).await;
        assert!(
            matches!(result, Err(BusError::Unreachable | BusError::Closed)),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "calls to a down peer fail fast"
        );
    }

    nodes.push(start_node(1, &addresses, SECRET, rebind(addresses[1]).await));

    eventually_async("0 reaches the restarted 1", || async {
        echo(&nodes[0].bus, 1, 2).await.is_ok()
    })
    .await;
    eventually_async("the restarted 1 reaches 0", || async {
        echo(&nodes[1].bus, 0, 3).await.is_ok()
    })
    .await;
}

/// Binds `addr` again once the process that held it has let go of it.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => {
                assert!(Instant::now() < deadline, "port never freed: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_returns_once_every_member_was_dialed() {
    init_logs();
    let (me, up, down) = (bind().await, bind().await, bind().await);
    let addresses: Vec<SocketAddr> = [&me, &up, &down]
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    // Nothing listens at member 2's address any more: its dial is refused at once.
    drop(down);
    // A dial timeout far above what a refused dial takes, even on a loaded machine.
    let slow_to_give_up = BusConfig {
        connect_timeout: DEADLINE,
        ..config(0, &addresses, SECRET)
    };
    let node = Bus::start(slow_to_give_up, me, TestService::new());
    let _peer = start_node(1, &addresses, SECRET, up);

    let started = Instant::now();
    assert!(node.settle(LONG).await, "settled before the limit");
    assert!(
        started.elapsed() < DEADLINE / 3,
        "a refused dial does not hold settle up to the dial timeout ({:?})",
        started.elapsed()
    );
    assert!(node.is_reachable(1), "a member that is up is reachable once settled");
    assert!(!node.is_reachable(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_that_dials_in_ends_the_backoff() {
    init_logs();
    let listeners = [bind().await, bind().await];
    let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
    let [first, second] = listeners;
    // Node 0 would wait a minute before redialing a lost peer on its own.
    let patient = BusConfig {
        redial: Redial {
            first: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        ..config(0, &addresses, SECRET)
    };
    let node = Bus::start(patient, first, TestService::new());
    let peer = start_node(1, &addresses, SECRET, second);
    eventually("0 reaches 1", || node.is_reachable(1)).await;

    peer.bus.stop();
    drop(peer);
    eventually("1 is seen down", || !node.is_reachable(1)).await;
    let _restarted = start_node(1, &addresses, SECRET, rebind(addresses[1]).await);
    eventually("0 redials the restarted 1 as soon as it dials in", || {
        node.is_reachable(1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_cuts_both_directions_until_heal() {
    let (nodes, _) = cluster(3).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    let bus = b.bus.clone();
    let inbound_pending = tokio::spawn(async move { bus.call(0, Req::Never, LONG).await });
    let bus = a.bus.clone();
    let outbound_pending = tokio::spawn(async move { bus.call(1, Req::Never, LONG).await });
    eventually("both calls are in flight", || {
        a.bus.peer_status(1).requests_sent == 1 && b.bus.peer_status(0).requests_sent == 1
    })
    .await;

    a.bus.isolate(&[1]);

    let result = outbound_pending.await.expect("task");
    assert!(matches!(result, Err(BusError::Isolated)), "{result:?}");
    let result = inbound_pending.await.expect("task");
    assert!(matches!(result, Err(BusError::Closed)), "{result:?}");

    assert!(!a.bus.is_reachable(1));
    assert!(a.bus.peer_status(1).isolated);
    let result = a.bus.call(1, Req::Echo(1), LONG).await;
    assert!(matches!(result, Err(BusError::Isolated)), "{result:?}");
    eventually("1 sees 0 unreachable", || !b.bus.is_reachable(0)).await;
    eventually("1's redial is turned away", || {
        b.bus.peer_status(0).last_error.is_some_and(|e| e.contains("isolated"))
    })
    .await;
    assert!(!b.bus.is_reachable(0));
    let result = b.bus.call(0, Req::Echo(1), LONG).await;
    assert!(matches!(result, Err(BusError::Unreachable)), "{result:?}");
    assert_eq!(a.bus.peer_status(1).inbound_connections, 0);

    // Other peers are unaffected.
    assert_eq!(echo(&a.bus, 2, 9).await.expect("0 -> 2"), 9);
    assert_eq!(echo(&nodes[2].bus, 0, 9).await.expect("2 -> 0"), 9);

    a.bus.heal();
    assert!(!a.bus.peer_status(1).isolated);
    eventually_async("0 reaches 1 after heal", || async { echo(&a.bus, 1, 4).await.is_ok() }).await;
    eventually_async("1 reaches 0 after heal", || async { echo(&b.bus, 0, 5).await.is_ok() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_times_out_at_its_own_deadline() {
    let (nodes, _) = cluster(2).await;
    let bus = nodes[0].bus.clone();
    // The sweeper first learns of a deadline a minute away; the later, sooner ones must wake it.
    let slow = tokio::spawn({
        let bus = bus.clone();
        async move { bus.call(1, Req::Never, Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let soon = bus.call(1, Req::Never, Duration::from_millis(300));
    let sooner = bus.call(1, Req::Never, Duration::from_millis(100));
    let (soon, sooner) = tokio::join!(soon, sooner);
    assert!(matches!(soon, Err(BusError::Timeout)), "{soon:?}");
    assert!(matches!(sooner, Err(BusError::Timeout)), "{sooner:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(20),
        "woken for the sooner deadlines: {took:?}"
    );
    assert!(!slow.is_finished(), "the minute-long call still waits");
    slow.abort();
    assert_eq!(echo(&bus, 1, 3).await.expect("after timeouts"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_leaves_the_connection_usable() {
    let (nodes, _) = cluster(2).await;
    let since = nodes[0].bus.peer_status(1).since_unix_ms;
    let started = Instant::now();
    let result = nodes[0].bus.call(1, Req::Never, Duration::from_millis(100)).await;
    assert!(matches!(result, Err(BusError::Timeout)), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(echo(&nodes[0].bus, 1, 8).await.expect("after timeout"), 8);
    let status = nodes[0].bus.peer_status(1);
    assert_eq!(status.since_unix_ms, since, "same connection throughout");
    assert_eq!(status.failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_reply_runs_before_responses_are_written() {
    const CALLS: u64 = 2_000;
    let (nodes, _) = cluster(2).await;
    let mut calls = JoinSet::new();
    for i in 0..CALLS {
        let bus = nodes[0].bus.clone();
        let server = nodes[1].service.clone();
        calls.spawn(async move {
            let Resp::Echo { seq, .. } = bus.call(1, Req::Echo(i), LONG).await.expect("call") else {
                panic!("not an echo");
            };
            let seen = server.barrier_seen.load(Ordering::SeqCst);
            assert!(
                seen >= seq,
                "response {seq} arrived before a before_reply that covered it ({seen})"
            );
        });
    }
    while let Some(joined) = calls.join_next().await {
        joined.expect("call task");
    }
    let barriers = nodes[1].service.barriers.load(Ordering::SeqCst);
    assert!((1..=CALLS).contains(&barriers), "{barriers} barriers");
}

/// Calls node 1 with `request` while node 1's response writer is held in `before_reply`; asserts that the answer
/// waits for the barrier, then releases it and returns the answer.
async fn call_held_by_before_reply(nodes: &[Node], request: Req) -> Result<Resp, BusError> {
    nodes[1].service.hold_replies.store(true, Ordering::SeqCst);
    let bus = nodes[0].bus.clone();
    let call = tokio::spawn(async move { bus.call(1, request, LONG).await });
    eventually("the writer is in before_reply", || {
        nodes[1].service.in_barrier.load(Ordering::SeqCst)
    })
    .await;
    // A negative check has to give the response time to (wrongly) arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !call.is_finished(),
        "a response was delivered while before_reply was pending"
    );
    nodes[1].service.reply_gate.add_permits(1_000);
    call.await.expect("task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_wait_for_before_reply() {
    let (nodes, _) = cluster(2).await;
    let result = call_held_by_before_reply(&nodes, Req::Echo(3)).await;
    assert!(matches!(result, Ok(Resp::Echo { value: 3, .. })), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_requests_are_answered_inline_and_still_wait_for_before_reply() {
    let (nodes, _) = cluster(2).await;
    assert_eq!(
        nodes[0].bus.call(1, Req::Now(8), LONG).await.expect("inline"),
        Resp::Now(8)
    );
    let result = call_held_by_before_reply(&nodes, Req::Now(9)).await;
    assert_eq!(result.expect("inline"), Resp::Now(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answered_after_told_requests_shows_they_were_handled() {
    let (nodes, _) = cluster(2).await;
    for value in 0..200 {
        nodes[0].bus.tell(1, Req::Now(value)).expect("tell");
    }
    assert_eq!(
        nodes[0].bus.call(1, Req::Now(200), LONG).await.expect("call"),
        Resp::Now(200)
    );
    assert_eq!(nodes[1].service.quick.load(Ordering::SeqCst), 201);
    nodes[0].bus.isolate(&[1]);
    assert!(matches!(nodes[0].bus.tell(1, Req::Now(0)), Err(BusError::Isolated)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_fails_the_call_not_the_connection() {
    let (nodes, _) = cluster(2).await;
    let result = nodes[0].bus.call(1, Req::Panic, LONG).await;
    assert!(
        matches!(result, Err(BusError::Remote(RemoteFailure::Aborted))),
        "{result:?}"
    );
    assert_eq!(echo(&nodes[0].bus, 1, 4).await.expect("after panic"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_fail_alone() {
    let (nodes, _) = cluster(2).await;
    let result = nodes[0].bus.call(1, Req::Blob(vec![1; 2 << 20]), LONG).await;
    assert!(
        matches!(result, Err(BusError::TooLarge { max, .. }) if max == 1 << 20),
        "{result:?}"
    );
    let result = nodes[0].bus.call(1, Req::Big(2 << 20), LONG).await;
    assert!(
        matches!(result, Err(BusError::Remote(RemoteFailure::TooLarge))),
        "{result:?}"
    );
    let result = nodes[0].bus.call(1, Req::Blob(vec![1; 100_000]), LONG).await;
    assert!(matches!(result, Ok(Resp::Blob(100_000))), "{result:?}");
    assert_eq!(echo(&nodes[0].bus, 1, 4).await.expect("after oversized"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_calls_and_unknown_peers() {
    let (nodes, _) = cluster(2).await;
    let result = nodes[0].bus.call(0, Req::Echo(11), LONG).await;
    assert!(
        matches!(result, Ok(Resp::Echo { value: 11, from: 0, .. })),
        "{result:?}"
    );
    assert_eq!(
        nodes[0].service.barriers.load(Ordering::SeqCst),
        1,
        "a self call passes the barrier too"
    );
    assert!(nodes[0].bus.is_reachable(0));
    let result = nodes[0].bus.call(9, Req::Echo(1), LONG).await;
    assert!(matches!(result, Err(BusError::UnknownPeer(9))), "{result:?}");
    assert!(!nodes[0].bus.is_reachable(9));
    assert_eq!(nodes[0].bus.peer_status(9), PeerStatus::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_fails_calls_and_disconnects_peers() {
    let (nodes, _) = cluster(2).await;
    nodes[0].bus.stop();
    let result = nodes[0].bus.call(1, Req::Echo(1), LONG).await;
    assert!(matches!(result, Err(BusError::Stopped)), "{result:?}");
    assert!(!nodes[0].bus.is_reachable(1) && !nodes[0].bus.is_reachable(0));
    eventually("1 sees 0 down", || !nodes[1].bus.is_reachable(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_reported_and_starts_stopped() {
    let addresses = vec![bind().await.local_addr().expect("addr"); 2];
    let mut bad = config(0, &addresses, b"");
    assert_eq!(bad.validate(), Err(ConfigError::EmptySecret));
    bad.secret = b"s".to_vec();
    assert_eq!(bad.validate(), Ok(()));
    bad.names[1] = "node0".to_owned();
    assert!(matches!(bad.validate(), Err(ConfigError::BadName(_))));
    bad.names[1] = "node1".to_owned();
    bad.me = 2;
    assert!(matches!(bad.validate(), Err(ConfigError::MeOutOfRange { .. })));
    bad.addresses.pop();
    bad.me = 0;
    assert!(matches!(bad.validate(), Err(ConfigError::AddressCount { .. })));
    assert!(!format!("{bad:?}").contains("\"s\""), "Debug must not show the secret");

    let bus = Bus::start(bad, bind().await, TestService::new());
    let result = bus.call(1, Req::Echo(1), LONG).await;
    assert!(matches!(result, Err(BusError::Stopped)), "{result:?}");
}

/// Throughput over one connection; run with `cargo test --release -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn throughput() {
    const CALLS: u64 = 100_000;
    let (nodes, _) = cluster(2).await;
    for in_flight in [1u64, 64, 1024, CALLS] {
        let started = Instant::now();
        let mut workers = JoinSet::new();
        for w in 0..in_flight {
            let bus = nodes[0].bus.clone();
            workers.spawn(async move {
                let mut i = w;
                while i < CALLS {
                    assert_eq!(echo(&bus, 1, i).await.expect("call"), i);
                    i += in_flight;
                }
            });
        }
        while let Some(joined) = workers.join_next().await {
            joined.expect("worker");
        }
        let elapsed = started.elapsed();
        println!(
            "{CALLS} calls, {in_flight} in flight: {elapsed:?}, {:.0} calls/s",
            CALLS as f64 / elapsed.as_secs_f64()
        );
    }
}
