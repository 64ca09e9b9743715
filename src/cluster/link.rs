//! The link thread: one NATS connection per node, on a current-thread tokio runtime.
//!
//! Owns: the thread, its runtime, the NATS client and every task on it (one per NATS
//! subscription; the JetStream tasks are in `tasks`), the interest table (filter, group) →
//! local subscription count, and the duplicate filter for inbound messages. Invariant:
//! every queue between the node and the link, and inside the link, is bounded, and each
//! drop is counted in `LinkStats`; the node is woken once per batch of `FromLink` messages
//! it has to read. Must not touch: anything of the node's but the two queues and the
//! wake-up callback.
//!
//! The link loop's `State` is here with its dispatch (`handle`); its methods are split by
//! path: `interest` (NATS subscriptions for local subscribers), `outbound` (a local
//! publish, its stores and core copy), `inbound` (messages from NATS and the queues,
//! settles, handovers); the JetStream tasks are in `tasks`, the storer in `store`.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subject, Subscriber};
use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::envelope::Envelope;
use super::order::Reorder;
use super::queue::{self, InterestView};
use super::release::ReleaseList;
use super::subject::{self, Prefix};
use super::{FromLink, LinkStats, Route, ToLink};
use crate::config::cluster::{ClusterConfig, NatsAuth};
use tasks::{start_kv, worker, InterestOp, KvQueues, QueueStart, RegistryOp, ViewFeed};

/// Capacity of the node → link queue.
pub const TO_LINK_MESSAGES_MAX: usize = 65_536;
/// Capacity of the link → node queue.
pub const FROM_LINK_MESSAGES_MAX: usize = 65_536;
/// `ToLink` messages handled per turn of the link loop, so inbound NATS traffic is not
/// starved by a busy node (and the reverse: `INBOUND_BATCH_MAX`).
const TO_LINK_BATCH_MAX: usize = 1024;
/// Inbound NATS messages handled per turn.
const INBOUND_BATCH_MAX: usize = 1024;
/// Capacity of the queue from the subscription tasks to the link loop.
const INBOUND_MESSAGES_MAX: usize = 65_536;
/// Messages async-nats buffers per subscription before it reports a slow consumer.
const SUBSCRIPTION_MESSAGES_MAX: usize = 8192;
/// Distinct (filter, group) interests; past it new ones are refused and counted.
const INTERESTS_MAX: usize = 100_000;
/// Recent sequence numbers remembered per origin node, to drop the second copy a node
/// gets when two of its filters' subjects match one message (`a/+` and `a/#`).
const DEDUP_WINDOW_MESSAGES: usize = 4096;
/// Origins remembered; past it the duplicate filter starts afresh.
const ORIGINS_MAX: usize = 256;
/// Longest wait for a subscription task to confirm its UNSUB is queued.
const UNSUBSCRIBE_WAIT_MS: u64 = 5000;
/// Longest wait for a publish to be queued on the connection.
pub(super) const PUBLISH_WAIT_MS: u64 = 1000;
/// Longest wait for a round trip through the server (or a SUB to be queued).
pub(super) const FLUSH_WAIT_MS: u64 = 5000;
/// Pause between checks for the first connection to NATS.
const CONNECT_POLL_MS: u64 = 20;
/// Longest the link tries (with retries) to store a QoS ≥ 1 message in another node's
/// queue; past it the publisher is acknowledged anyway and the failure counted.
pub(super) const QUEUE_PUBLISH_WAIT_MS: u64 = 2000;
/// Queue messages handed to the node and not settled yet, at most (the consumer hands out
/// `queue::QUEUE_ACK_PENDING_MAX` at a time; more means settles were lost).
const UNSETTLED_MAX: usize = 65_536;
/// Pause between attempts to store a message in a node's queue.
const QUEUE_RETRY_MS: u64 = 100;
/// QoS ≥ 1 messages whose queue stores are under way; past it new ones skip the queue
/// (counted in `queue_failed`).
const QUEUE_PENDING_MAX: usize = 16_384;
/// Longest QoS ≥ 1 messages wait, after the link's first connection, for the interest view
/// to load the whole bucket once; then they are routed with the view as it is.
const VIEW_LOAD_WAIT_MS: u64 = 5000;
/// QoS ≥ 1 messages held for the view's first load at most; past it the wait ends.
const UNVIEWED_MAX: usize = QUEUE_PENDING_MAX;

mod alive;
mod inbound;
mod interest;
mod outbound;
mod recheck;
mod reclaim;
mod store;
mod sweep;
mod tasks;

pub(crate) use alive::{Beat, REMOVAL_WAIT_MS};

type Wake = Arc<dyn Fn() + Send + Sync>;

/// The node's side of the link: a clonable sender for the shards.
#[derive(Clone)]
pub struct LinkSender {
    tx: Sender<ToLink>,
    notify: Arc<Notify>,
    stats: Arc<LinkStats>,
}

impl LinkSender {
    /// Queue every message of `batch` for the link and wake it once; those that do not
    /// fit are dropped and counted. Returns how many were queued.
    pub fn send_all(&self, batch: impl IntoIterator<Item = ToLink>) -> usize {
        let mut queued = 0;
        for m in batch {
            if self.tx.try_send(m).is_ok() {
                queued += 1;
            } else {
                LinkStats::add(&self.stats.to_link_dropped);
            }
        }
        if queued > 0 {
            self.notify.notify_one();
        }
        queued
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Queue `m` for the link and wake it; `false` (counted) when the queue is full.
    pub fn send(&self, m: ToLink) -> bool {
        match self.tx.try_send(m) {
            Ok(()) => {
                self.notify.notify_one();
                true
            }
            Err(_) => {
                LinkStats::add(&self.stats.to_link_dropped);
                false
            }
        }
    }
}

/// A running link: its sender, its output queue, its counters and its thread.
pub struct LinkHandle {
    sender: LinkSender,
    rx: Receiver<FromLink>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LinkHandle {
    /// Start the link thread for `cfg`. `wake` is called (from the link thread) after
    /// messages were queued for the node. The queue consumer starts at once: no sessions
    /// restored from a store are checked (`start_for`).
    pub fn start(cfg: ClusterConfig, wake: Wake) -> std::io::Result<LinkHandle> {
        Self::start_for(cfg, wake, 0)
    }

    /// As `start`, for a node of `shards` shards: this node's queue consumer waits until
    /// each shard has sent `ToLink::Restored` and the sessions it names were checked
    /// against the registry (bounded: `reclaim::VERIFY_WAIT_MS` and the bucket opening).
    pub fn start_for(cfg: ClusterConfig, wake: Wake, shards: usize) -> std::io::Result<LinkHandle> {
        let prefix = Prefix::new(&cfg.name)
            .map_err(|_| std::io::Error::other("cluster name is not a valid subject token"))?;
        let (to_tx, to_rx) = bounded(TO_LINK_MESSAGES_MAX);
        let (from_tx, from_rx) = bounded(FROM_LINK_MESSAGES_MAX);
        let stats = Arc::new(LinkStats::default());
        let notify = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let out = Out {
            tx: from_tx,
            wake,
            stats: stats.clone(),
        };
        let (n, s) = (notify.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("cluster-link".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(run(cfg, prefix, to_rx, n, s, out, shards)),
                    Err(e) => eprintln!("cluster link: cannot build its runtime: {e}"),
                }
            })?;
        Ok(LinkHandle {
            sender: LinkSender {
                tx: to_tx,
                notify,
                stats,
            },
            rx: from_rx,
            stop,
            thread: Some(thread),
        })
    }

    /// A sender for a shard.
    pub fn sender(&self) -> LinkSender {
        self.sender.clone()
    }

    /// The queue of what the link reports; drain it when woken.
    pub fn receiver(&self) -> &Receiver<FromLink> {
        &self.rx
    }

    /// The link's counters.
    pub fn stats(&self) -> &LinkStats {
        &self.sender.stats
    }

    /// Stop the thread and wait for it; its NATS connection closes with it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.sender.notify.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The link → node queue, shared by the link's tasks.
#[derive(Clone)]
pub(super) struct Out {
    tx: Sender<FromLink>,
    wake: Wake,
    stats: Arc<LinkStats>,
}

impl Out {
    /// Queue without waking (the caller wakes once per batch).
    fn push(&self, m: FromLink) -> bool {
        let ok = self.tx.try_send(m).is_ok();
        if !ok {
            LinkStats::add(&self.stats.from_link_dropped);
        }
        ok
    }

    pub(super) fn push_wake(&self, m: FromLink) {
        if self.push(m) {
            (self.wake)();
        }
    }
}

/// What a NATS subscription's messages are for.
enum Tag {
    Deliver(Route),
    Takeover,
    State,
    /// A message from this node's queue: how often it was handed out, and how long ago it
    /// was stored (ms).
    Queued {
        delivered: i64,
        age_ms: u64,
    },
    /// A message from share group (group, filter)'s queue, which this node's members
    /// share with other nodes' (`queue::shared_consumer_config`).
    SharedQueued {
        group: String,
        filter: String,
        delivered: i64,
        age_ms: u64,
    },
}

type Inbound = (Arc<Tag>, async_nats::Message);

/// The link loop's own state; only the loop touches it.
struct State {
    node: String,
    prefix: Prefix,
    client: Client,
    out: Out,
    inbound_tx: mpsc::Sender<Inbound>,
    interests: HashMap<(String, Option<String>), Interest>,
    seq: u64,
    seen: HashMap<String, Window>,
    registry: Vec<mpsc::Sender<RegistryOp>>,
    retained: mpsc::Sender<Bytes>,
    /// Interest bucket writes and the answers that must follow them.
    interest_ops: mpsc::Sender<InterestOp>,
    /// Which other nodes want which filters (the interest bucket, kept by its watcher).
    view: Arc<Mutex<InterestView>>,
    js: jetstream::Context,
    /// QoS ≥ 1 messages in publish order, each waiting for its queue stores; the core NATS
    /// copy of each goes once it and every earlier one are done, and a store waits while
    /// an earlier message of its topic goes another way (`release`).
    pending: ReleaseList<Pending>,
    /// Stores for the storer task, in the order they may start.
    store_tx: mpsc::Sender<store::StoreJob>,
    /// Queue messages handed to the node: token → the reply subject that acknowledges it.
    unsettled: HashMap<u64, Subject>,
    /// Acknowledgements of settled queue messages, sent together at the end of the turn.
    settles: Vec<Subject>,
    next_token: u64,
    /// The queue stream's name (for reclaim scans).
    stream: String,
    /// The share groups' stream (each group's consumer task makes sure it exists).
    shared_stream: jetstream::stream::Config,
    /// Sessions restored from the store, gathered from the shards' `Restored`.
    restored: Vec<String>,
    /// Shards whose `Restored` is still to come.
    restored_left: usize,
    /// Where the restored sessions go once every shard sent its own (the ownership check
    /// that precedes the queue consumer).
    restored_tx: Option<oneshot::Sender<Vec<String>>>,
    /// A private inbox the link publishes to and reads back: the round trip that proves
    /// the server has processed every SUB sent before it (`server_caught_up`).
    echo: Option<Echo>,
    /// Inbound QoS ≥ 1 messages waiting for the one before them on their topic (`order`).
    order: Reorder<FromLink>,
    /// The start of `order`'s clock.
    clock: tokio::time::Instant,
    /// The interest view has loaded the whole bucket once (or the wait for it ended).
    view_loaded: bool,
    /// QoS ≥ 1 messages that came before that, in order: routed with an empty view they
    /// would go by core NATS only, also to nodes whose queue holds them already (a
    /// publisher's resend after this node restarted).
    unviewed: VecDeque<Unviewed>,
    /// The cluster's name (its buckets' names derive from it).
    cluster: String,
    /// Shards of the node (0: a link without shards, which lists no sessions).
    shards: usize,
    /// The check of the live sessions after a cut-off, and the queue messages it holds.
    recheck: recheck::Recheck,
}

/// A QoS ≥ 1 message waiting for the view's first load: as in `ToLink::Publish`.
type Unviewed = (Envelope, Option<(usize, u64)>, Option<String>, Vec<String>);

/// The echo subscription and the number of its last probe.
struct Echo {
    subject: Subject,
    sub: Subscriber,
    seq: u64,
}

/// A QoS ≥ 1 message waiting in the release list: its core NATS copy and its answer.
struct Pending {
    subject: String,
    bytes: Bytes,
    ack: Option<(usize, u64)>,
    /// Its stores' message id, before the target node's name (`store_msg_id`).
    msg_id: String,
    /// Share groups the publishing node delivered it to itself (`ToLink::Publish`).
    served: Vec<String>,
}

/// The message id (`Nats-Msg-Id`, before `.<target node>`) of the stores of node `node`'s
/// message numbered `seq` by its link: `<node>.<seq>`, or `<node>.<stem>` for a message
/// whose id must survive a power cut of the node (`ToLink::Publish::msg_id`). Within the
/// stream's duplicate window (`queue::QUEUE_DUPLICATE_WINDOW`) JetStream stores one message
/// per id: a retry of a store, or the publisher's resend of a stored QoS 2 message after
/// the cut, is stored once.
pub fn store_msg_id(node: &str, seq: u64, stem: Option<&str>) -> String {
    match stem {
        Some(stem) => format!("{node}.{stem}"),
        None => format!("{node}.{seq}"),
    }
}

struct Interest {
    count: usize,
    /// One per NATS subscription: ask its task to unsubscribe, and hear when it has.
    stops: Vec<Stop>,
}

type Stop = oneshot::Sender<oneshot::Sender<()>>;

#[derive(Default)]
struct Window {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

async fn run(
    cfg: ClusterConfig,
    prefix: Prefix,
    inbox: Receiver<ToLink>,
    notify: Arc<Notify>,
    stop: Arc<AtomicBool>,
    out: Out,
    shards: usize,
) {
    let reconnected = Arc::new(watch::Sender::new(0u64));
    let cutoffs = Arc::new(watch::Sender::new(0u64));
    let conn = Connections {
        reconnected: reconnected.clone(),
        cutoffs: cutoffs.clone(),
    };
    let client = match connect(&cfg, out.clone(), conn).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cluster link: cannot configure the NATS client: {e}");
            return;
        }
    };
    // Subscriptions made before the first connection are not replayed by async-nats
    // (those made later are, on every reconnect), so nothing starts before it. Meanwhile
    // a CONNECT that needs the registry is refused at once (its client may try another
    // node) and everything else waits, in order, as it would in the inbox.
    let mut early = Vec::new();
    while client.connection_state() != async_nats::connection::State::Connected {
        if stop.load(Ordering::Acquire) {
            return;
        }
        while early.len() < TO_LINK_MESSAGES_MAX {
            match inbox.try_recv() {
                Ok(ToLink::Claim { client_id, token }) => {
                    LinkStats::add(&out.stats.nats_errors);
                    out.push_wake(FromLink::ClaimFailed { token, client_id });
                }
                Ok(m) => early.push(m),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(CONNECT_POLL_MS)).await;
    }
    let (inbound_tx, mut inbound_rx) = mpsc::channel(INBOUND_MESSAGES_MAX);
    let view = Arc::new(Mutex::new(InterestView::new(&cfg.node)));
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let (restored_tx, restored_rx) = oneshot::channel();
    let restored_rx = (shards > 0).then_some(restored_rx);
    let (rejoined_tx, mut rejoined_rx) = mpsc::channel(1);
    let (checked_tx, mut checked_rx) = mpsc::channel(1);
    let mut reconnected_rx = reconnected.subscribe();
    let mut cutoffs_rx = cutoffs.subscribe();
    let cut_before = *cutoffs_rx.borrow_and_update();
    let KvQueues {
        registry,
        retained,
        interest: interest_ops,
    } = start_kv(
        &cfg,
        &prefix,
        &client,
        &out,
        reconnected,
        ViewFeed {
            view: view.clone(),
            loaded: loaded_tx,
        },
        QueueStart {
            inbound: inbound_tx.clone(),
            restored: restored_rx,
            rejoined: rejoined_tx,
        },
    );
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_millis(QUEUE_PUBLISH_WAIT_MS));
    let (stored_tx, mut stored_rx) = mpsc::channel(QUEUE_PENDING_MAX);
    let (store_tx, store_rx) = mpsc::channel(QUEUE_PENDING_MAX);
    tokio::spawn(store::storer(js.clone(), store_rx, stored_tx));
    let shared_stream = queue::shared_stream_config(&cfg.name, &prefix, cfg.kv_replicas);
    let mut st = State {
        node: cfg.node.clone(),
        prefix,
        client,
        out,
        inbound_tx,
        interests: HashMap::new(),
        seq: start_seq(),
        seen: HashMap::new(),
        registry,
        retained,
        interest_ops,
        view,
        js,
        pending: ReleaseList::default(),
        store_tx,
        unsettled: HashMap::new(),
        settles: Vec::new(),
        next_token: 1,
        stream: queue::stream_name(&cfg.name),
        shared_stream,
        restored: Vec::new(),
        restored_left: shards,
        restored_tx: (shards > 0).then_some(restored_tx),
        echo: None,
        order: Reorder::default(),
        clock: tokio::time::Instant::now(),
        view_loaded: false,
        unviewed: VecDeque::new(),
        cluster: cfg.name.clone(),
        shards,
        recheck: recheck::Recheck::new(checked_tx, cut_before),
    };
    st.echo = st.start_echo().await;
    let takeover = st.prefix.control(&format!("takeover.{}", st.node));
    // Held for the link's life: dropping it would end the subscription.
    let _takeover = st.subscribe(&takeover, None, Arc::new(Tag::Takeover)).await;
    let state = st.prefix.control(&format!("state.{}", st.node));
    let _state = st.subscribe(&state, None, Arc::new(Tag::State)).await;
    let view_wait = tokio::time::timeout(Duration::from_millis(VIEW_LOAD_WAIT_MS), loaded_rx);
    tokio::pin!(view_wait);
    for m in early {
        st.handle(m).await;
    }
    st.flush_settles().await;
    while !stop.load(Ordering::Acquire) {
        let due = st
            .order
            .next_due()
            .map(|ms| st.clock + Duration::from_millis(ms));
        let lists_due = st.recheck.lists_due();
        tokio::select! {
            loaded = &mut view_wait, if !st.view_loaded => {
                st.view_ready(matches!(loaded, Ok(Ok(())))).await;
                (st.out.wake)();
            }
            Ok(()) = cutoffs_rx.changed() => {
                let n = *cutoffs_rx.borrow_and_update();
                st.cut_off(Some(n));
            }
            Ok(()) = reconnected_rx.changed() => {
                reconnected_rx.borrow_and_update();
                st.start_check();
            }
            Some(()) = rejoined_rx.recv() => st.cut_off(None),
            () = tokio::time::sleep_until(lists_due.unwrap_or(st.clock)), if lists_due.is_some() => {
                st.lists_done();
            }
            Some(generation) = checked_rx.recv() => st.check_done(generation),
            () = tokio::time::sleep_until(due.unwrap_or(st.clock)), if due.is_some() => {
                let mut out = Vec::new();
                st.order.expire(st.now_ms(), &mut out);
                st.pass_on(out);
                (st.out.wake)();
            }
            _ = notify.notified() => st.drain(&inbox, &notify).await,
            Some(first) = inbound_rx.recv() => {
                st.inbound(first);
                for _ in 1..INBOUND_BATCH_MAX {
                    match inbound_rx.try_recv() {
                        Ok(m) => st.inbound(m),
                        Err(_) => break,
                    }
                }
                (st.out.wake)();
            }
            Some((id, stored)) = stored_rx.recv() => {
                st.stored(id, stored).await;
                while let Ok((id, stored)) = stored_rx.try_recv() {
                    st.stored(id, stored).await;
                }
                (st.out.wake)();
            }
        }
    }
}

/// Sequence numbers start at the clock in nanoseconds, so a restarted node's numbers are
/// new to the duplicate filters of the others.
fn start_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
}

/// Where the NATS client's connection events are counted.
struct Connections {
    /// Each (re)connection, for every bucket watcher (a count each watcher follows on its
    /// own receiver, so none misses one that another saw) and the link loop.
    reconnected: Arc<watch::Sender<u64>>,
    /// Each lost connection, for the link loop (`recheck`).
    cutoffs: Arc<watch::Sender<u64>>,
}

/// A client that reports its connection state to the node, and its connection events
/// through `conn`.
async fn connect(
    cfg: &ClusterConfig,
    out: Out,
    conn: Connections,
) -> Result<Client, async_nats::Error> {
    let (o, addrs) = connect_options(cfg, &format!("shardmq {}", cfg.node)).await?;
    let o = o
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_MESSAGES_MAX)
        .event_callback(move |e| {
            let out = out.clone();
            let (reconnected, cutoffs) = (conn.reconnected.clone(), conn.cutoffs.clone());
            async move {
                match e {
                    Event::Connected => {
                        LinkStats::add(&out.stats.connection_changes);
                        reconnected.send_modify(|n| *n = n.wrapping_add(1));
                        out.push_wake(FromLink::Up);
                    }
                    Event::Disconnected => {
                        LinkStats::add(&out.stats.connection_changes);
                        cutoffs.send_modify(|n| *n = n.wrapping_add(1));
                        out.push_wake(FromLink::Down);
                    }
                    Event::SlowConsumer(_) => LinkStats::add(&out.stats.from_link_dropped),
                    _ => {}
                }
            }
        });
    Ok(o.connect(addrs).await?)
}

/// What every NATS connection of a node's configuration shares — the client name, TLS
/// (`cluster_nats_cafile`), credentials and the servers' addresses — for the link and for
/// `shardmq cluster-forget` (`forget`), which must reach NATS exactly as the broker does.
pub(super) async fn connect_options(
    cfg: &ClusterConfig,
    name: &str,
) -> Result<(ConnectOptions, Vec<ServerAddr>), async_nats::Error> {
    let mut o = ConnectOptions::new().name(name);
    if let Some(ca) = &cfg.cafile {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    o = match &cfg.auth {
        NatsAuth::None => o,
        NatsAuth::Creds(path) => o.credentials_file(path).await?,
        NatsAuth::UserPassword(u, p) => o.user_and_password(u.clone(), p.clone()),
    };
    let addrs = cfg
        .nats
        .iter()
        .map(|u| u.parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok((o, addrs))
}

impl State {
    async fn drain(&mut self, inbox: &Receiver<ToLink>, notify: &Notify) {
        for _ in 0..TO_LINK_BATCH_MAX {
            match inbox.try_recv() {
                Ok(m) => self.handle(m).await,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    return self.flush_settles().await;
                }
            }
        }
        self.flush_settles().await;
        // Budget spent with work left: come back after the inbound side had a turn.
        notify.notify_one();
    }

    async fn handle(&mut self, m: ToLink) {
        match m {
            ToLink::Interest { filter, group, ack } => self.interest(filter, group, ack).await,
            ToLink::NoInterest { filter, group } => self.no_interest(filter, group).await,
            ToLink::Publish {
                envelope,
                ack,
                msg_id,
                served,
            } => {
                if !self.view_loaded && envelope.qos != crate::protocol::QoS::AtMostOnce {
                    if self.unviewed.len() < UNVIEWED_MAX {
                        self.unviewed.push_back((*envelope, ack, msg_id, served));
                        return;
                    }
                    self.view_ready(false).await;
                }
                self.publish(*envelope, ack, msg_id, served).await
            }
            ToLink::Settle { token } => self.settle(token),
            ToLink::Return { token } => self.give_back(token).await,
            ToLink::Claim { client_id, token } => {
                if self.client.connection_state() != async_nats::connection::State::Connected {
                    // The registry cannot be reached now: refuse at once rather than
                    // let the client wait out the node's deadline.
                    LinkStats::add(&self.out.stats.nats_errors);
                    self.out
                        .push_wake(FromLink::ClaimFailed { token, client_id });
                    return;
                }
                let i = worker(&client_id);
                self.registry_op(i, RegistryOp::Claim { client_id, token })
            }
            ToLink::Handover {
                to,
                client_id,
                state,
            } => self.handover(&to, &client_id, state).await,
            ToLink::Release { client_id } => {
                let i = worker(&client_id);
                self.registry_op(i, RegistryOp::Release { client_id })
            }
            ToLink::SessionSubs {
                client_id,
                state,
                ack,
            } => {
                let i = worker(&client_id);
                self.registry_op(
                    i,
                    RegistryOp::Subs {
                        client_id,
                        state,
                        ack,
                    },
                )
            }
            ToLink::Reclaim {
                client_id,
                from,
                filters,
            } => {
                if !subject::valid_cluster_name(&from) || from == self.node {
                    LinkStats::add(&self.out.stats.malformed);
                    return;
                }
                tokio::spawn(reclaim::scan(
                    self.js.clone(),
                    self.stream.clone(),
                    self.prefix.queue(&from),
                    client_id,
                    filters,
                    self.out.clone(),
                ));
            }
            ToLink::Live { client_ids } => self.live_listed(client_ids),
            ToLink::Restored { client_ids } => {
                self.restored.extend(client_ids);
                self.restored_left = self.restored_left.saturating_sub(1);
                if self.restored_left == 0 {
                    if let Some(tx) = self.restored_tx.take() {
                        let _ = tx.send(std::mem::take(&mut self.restored));
                    }
                }
            }
        }
    }

    fn registry_op(&self, i: usize, op: RegistryOp) {
        let Some(tx) = self.registry.get(i) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(op) | mpsc::error::TrySendError::Closed(op)) =
            tx.try_send(op)
        {
            LinkStats::add(&self.out.stats.nats_errors);
            match op {
                RegistryOp::Claim { client_id, token } => self
                    .out
                    .push_wake(FromLink::ClaimFailed { token, client_id }),
                RegistryOp::Subs { ack, .. } => self.out.push_wake(FromLink::SubsSaved { ack }),
                RegistryOp::Release { .. } => {}
            }
        }
    }
}

/// Whether `op` succeeded within `ms`.
pub(super) async fn within<T, E>(
    ms: u64,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(ms), op).await,
        Ok(Ok(_))
    )
}
