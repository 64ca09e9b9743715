//! The link thread: one NATS connection per node, on a current-thread tokio runtime.
//!
//! Owns: the thread, its runtime, the NATS client and every task on it (one per NATS
//! subscription; the JetStream tasks are in `tasks`), the interest table (filter, group) →
//! local subscription count, and the duplicate filter for inbound messages. Invariant:
//! every queue between the node and the link, and inside the link, is bounded, and each
//! drop is counted in `LinkStats`; the node is woken once per batch of `FromLink` messages
//! it has to read. Must not touch: anything of the node's but the two queues and the
//! wake-up callback.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, Event, HeaderMap, ServerAddr, Subject, Subscriber};
use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::envelope::{self, Envelope};
use super::order::Reorder;
use super::queue::{self, InterestView};
use super::release::ReleaseList;
use super::subject::{self, Prefix};
use super::{FromLink, LinkStats, Route, ToLink};
use crate::config::cluster::{ClusterConfig, NatsAuth};
use tasks::{
    interest_filter, start_kv, worker, InterestOp, KvQueues, QueueStart, RegistryOp, ShareConsumer,
    ViewFeed,
};

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
mod reclaim;
mod store;
mod tasks;

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
}

/// A QoS ≥ 1 message waiting for the view's first load: as in `ToLink::Publish`.
type Unviewed = (Envelope, Option<(usize, u64)>, Option<String>);

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
    let client = match connect(&cfg, out.clone(), reconnected.clone()).await {
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
    while !stop.load(Ordering::Acquire) {
        let due = st
            .order
            .next_due()
            .map(|ms| st.clock + Duration::from_millis(ms));
        tokio::select! {
            loaded = &mut view_wait, if !st.view_loaded => {
                st.view_ready(matches!(loaded, Ok(Ok(())))).await;
                (st.out.wake)();
            }
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

/// A client that reports its connection state to the node, and each (re)connection to
/// every bucket watcher through `reconnected` (a count each watcher follows on its own
/// receiver, so none misses one that another saw).
async fn connect(
    cfg: &ClusterConfig,
    out: Out,
    reconnected: Arc<watch::Sender<u64>>,
) -> Result<Client, async_nats::Error> {
    let (o, addrs) = connect_options(cfg, &format!("shardmq {}", cfg.node)).await?;
    let o = o
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_MESSAGES_MAX)
        .event_callback(move |e| {
            let out = out.clone();
            let reconnected = reconnected.clone();
            async move {
                match e {
                    Event::Connected => {
                        LinkStats::add(&out.stats.connection_changes);
                        reconnected.send_modify(|n| *n = n.wrapping_add(1));
                        out.push_wake(FromLink::Up);
                    }
                    Event::Disconnected => {
                        LinkStats::add(&out.stats.connection_changes);
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
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
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
            } => {
                if !self.view_loaded && envelope.qos != crate::protocol::QoS::AtMostOnce {
                    if self.unviewed.len() < UNVIEWED_MAX {
                        self.unviewed.push_back((*envelope, ack, msg_id));
                        return;
                    }
                    self.view_ready(false).await;
                }
                self.publish(*envelope, ack, msg_id).await
            }
            ToLink::Settle { token } => self.settle(token).await,
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

    /// Count one local subscriber of (filter, group); subscribe on NATS for the first and
    /// flush, so the answer means the server has the interest. Interests are handled one
    /// after another, so an answer for a later one also covers every earlier one.
    async fn interest(&mut self, filter: String, group: Option<String>, ack: Option<(usize, u64)>) {
        let key = (filter, group);
        if let Some(i) = self.interests.get_mut(&key) {
            i.count += 1;
            let (filter, group) = key;
            self.answer_interest(FromLink::InterestReady { filter, group, ack }, None);
            return;
        }
        let (filter, group) = key;
        let subjects = match subject::filter_to_subjects(&self.prefix, &filter) {
            Ok(s)
                if crate::topic::valid_filter(&filter) && self.interests.len() < INTERESTS_MAX =>
            {
                s
            }
            _ => {
                // Invalid, too long for a subject, or the table is full: this subscription
                // stays local (counted), and the node is told so.
                LinkStats::add(&self.out.stats.interest_dropped);
                self.answer_interest(FromLink::InterestRefused { filter, group, ack }, None);
                return;
            }
        };
        let queue = group.as_deref().map(|g| subject::queue_group(g, &filter));
        let tag = Arc::new(Tag::Deliver(match &group {
            None => Route::Plain,
            Some(g) => Route::Shared {
                group: g.clone(),
                filter: filter.clone(),
            },
        }));
        let mut stops = Vec::with_capacity(subjects.len() + 1);
        for s in &subjects {
            if let Some(t) = self.subscribe(s, queue.clone(), tag.clone()).await {
                stops.push(t);
            }
        }
        if let (Some(g), Some(q)) = (&group, &queue) {
            stops.push(self.read_share_queue(g, &filter, q));
        }
        // A round trip through the server: it has processed the SUBs before the echo
        // comes back (async-nats' `flush` only writes them to the socket).
        if !self.server_caught_up().await {
            LinkStats::add(&self.out.stats.nats_errors);
        }
        self.interests.insert(
            (filter.clone(), group.clone()),
            Interest { count: 1, stops },
        );
        // The interest goes into the interest bucket, so that other nodes store QoS ≥ 1
        // messages for it in this node's queue (a share group's: in the group's queue)
        // even while this node is down.
        let put = Some(queue::interest_key(
            &self.node,
            &interest_filter(&filter, group.as_deref()),
        ));
        self.answer_interest(FromLink::InterestReady { filter, group, ack }, put);
    }

    /// Subscribe to a private inbox for `server_caught_up`.
    async fn start_echo(&self) -> Option<Echo> {
        let subject = Subject::from(self.client.new_inbox());
        let wait = Duration::from_millis(FLUSH_WAIT_MS);
        match tokio::time::timeout(wait, self.client.subscribe(subject.clone())).await {
            Ok(Ok(sub)) => Some(Echo {
                subject,
                sub,
                seq: 0,
            }),
            _ => {
                LinkStats::add(&self.out.stats.nats_errors);
                None
            }
        }
    }

    /// Publish a probe to the echo inbox and wait (bounded) until it comes back. The server
    /// reads a connection's operations in order, so when the probe is delivered every SUB
    /// and UNSUB this connection sent before it is in effect on that server.
    async fn server_caught_up(&mut self) -> bool {
        if self.echo.is_none() {
            self.echo = self.start_echo().await;
        }
        let Some(echo) = self.echo.as_mut() else {
            return false;
        };
        echo.seq += 1;
        let probe = echo.seq.to_string();
        let sent = self
            .client
            .publish(echo.subject.clone(), Bytes::from(probe.clone()));
        if !within(FLUSH_WAIT_MS, sent).await {
            return false;
        }
        let back = async {
            // Probes that timed out earlier may still arrive; skip them.
            while let Some(m) = echo.sub.next().await {
                if m.payload.as_ref() == probe.as_bytes() {
                    return true;
                }
            }
            false
        };
        let wait = Duration::from_millis(FLUSH_WAIT_MS);
        match tokio::time::timeout(wait, back).await {
            Ok(true) => true,
            Ok(false) => {
                // The subscription ended: make a new one next time.
                self.echo = None;
                false
            }
            Err(_) => false,
        }
    }

    /// Send `answer` once the interest bucket holds `put` (a key of this node's), in the
    /// order the interests came: a later answer never overtakes an earlier one.
    fn answer_interest(&self, answer: FromLink, put: Option<String>) {
        let op = InterestOp::Put {
            key: put,
            node: self.node.clone(),
            answer,
        };
        if let Err(e) = self.interest_ops.try_send(op) {
            LinkStats::add(&self.out.stats.nats_errors);
            if let InterestOp::Put { answer, .. } = e.into_inner() {
                self.out.push_wake(answer);
            }
        }
    }

    /// After the last local subscriber, unsubscribe and wait until each UNSUB is queued
    /// on the connection, so a later round trip (`server_caught_up`) proves the server has
    /// dropped the interest.
    async fn no_interest(&mut self, filter: String, group: Option<String>) {
        let key = (filter, group);
        let Some(i) = self.interests.get_mut(&key) else {
            return;
        };
        i.count -= 1;
        if i.count > 0 {
            return;
        }
        let Some(i) = self.interests.remove(&key) else {
            return;
        };
        let op = InterestOp::Delete {
            key: queue::interest_key(&self.node, &interest_filter(&key.0, key.1.as_deref())),
        };
        if self.interest_ops.try_send(op).is_err() {
            LinkStats::add(&self.out.stats.nats_errors);
        }
        for stop in i.stops {
            let (ack_tx, ack_rx) = oneshot::channel();
            if stop.send(ack_tx).is_ok() {
                let wait = Duration::from_millis(UNSUBSCRIBE_WAIT_MS);
                if !matches!(tokio::time::timeout(wait, ack_rx).await, Ok(Ok(()))) {
                    LinkStats::add(&self.out.stats.nats_errors);
                }
            }
        }
    }

    /// Start reading share group (group, filter)'s queue (queue name `qname`) with the
    /// group's durable consumer, which the other nodes with members read too.
    fn read_share_queue(&self, group: &str, filter: &str, qname: &str) -> Stop {
        let (stop_tx, stop_rx) = oneshot::channel();
        let s = ShareConsumer {
            js: self.js.clone(),
            stream: self.shared_stream.clone(),
            consumer: queue::shared_consumer_config(&self.prefix, qname),
            group: group.to_string(),
            filter: filter.to_string(),
            inbound: self.inbound_tx.clone(),
            stats: self.out.stats.clone(),
        };
        tokio::spawn(tasks::share_consumer(s, stop_rx));
        stop_tx
    }

    /// Subscribe (in queue group `queue` if given) and forward what arrives to the loop.
    async fn subscribe(&self, subject: &str, queue: Option<String>, tag: Arc<Tag>) -> Option<Stop> {
        let wait = Duration::from_millis(FLUSH_WAIT_MS);
        let sub = match queue {
            None => tokio::time::timeout(wait, self.client.subscribe(subject.to_string())).await,
            Some(q) => {
                let sub = self.client.queue_subscribe(subject.to_string(), q);
                tokio::time::timeout(wait, sub).await
            }
        };
        let sub = match sub {
            Ok(Ok(s)) => s,
            _ => {
                LinkStats::add(&self.out.stats.nats_errors);
                return None;
            }
        };
        let tx = self.inbound_tx.clone();
        let stats = self.out.stats.clone();
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(forward(sub, tag, tx, stats, stop_rx));
        Some(stop_tx)
    }

    /// Send a message that entered here to the nodes that want it. QoS 0 goes on core NATS
    /// at once. A QoS ≥ 1 message is first stored in the queue of every other node the
    /// interest bucket names, then sent on core NATS (for nodes whose interest the bucket
    /// does not show yet) with a header naming the nodes whose queue has it; messages
    /// leave in the order they came, and `ack` is answered when the message leaves. A
    /// store waits while an earlier message of its topic is meant for other nodes and has
    /// not left (`release`), and the storer keeps the stores in order (`store`).
    async fn publish(
        &mut self,
        mut e: Envelope,
        ack: Option<(usize, u64)>,
        msg_id: Option<String>,
    ) {
        e.origin.clone_from(&self.node);
        e.seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let stats = &self.out.stats;
        let (Ok(subject), Ok(bytes)) = (
            subject::topic_to_subject(&self.prefix, &e.topic),
            envelope::encode(&e),
        ) else {
            LinkStats::add(&stats.too_large);
            self.answer_published(ack);
            return;
        };
        let bytes = Bytes::from(bytes);
        if e.retain && self.retained.try_send(bytes.clone()).is_err() {
            LinkStats::add(&stats.nats_errors);
        }
        // While NATS is unreachable the client's command queue would fill and block this
        // loop; the message is lost for remote subscribers either way (docs/cluster.md).
        if self.client.connection_state() != async_nats::connection::State::Connected {
            LinkStats::add(&stats.down_dropped);
            self.answer_published(ack);
            return;
        }
        // QoS ≥ 1: the other nodes wanting it, and the share groups with members anywhere
        // (one store per group, which one node takes).
        let targets = if e.qos == crate::protocol::QoS::AtMostOnce {
            Vec::new()
        } else {
            self.view
                .lock()
                .map(|v| {
                    let mut t = v.nodes(&e.topic);
                    t.extend(v.groups(&e.topic));
                    t
                })
                .unwrap_or_default()
        };
        if targets.is_empty()
            && (self.pending.is_empty() || e.qos == crate::protocol::QoS::AtMostOnce)
        {
            self.core_publish(subject, None, bytes).await;
            self.answer_published(ack);
            return;
        }
        // Too many stores under way: this one skips them (counted as failed).
        let store = self.pending.len() < QUEUE_PENDING_MAX;
        let p = Pending {
            subject,
            bytes,
            ack,
            msg_id: store_msg_id(&self.node, e.seq, msg_id.as_deref()),
        };
        self.pending.push(&e.topic, targets, store, e.seq, p);
        self.release_pending().await;
    }

    /// The interest view loaded the whole bucket once (`loaded`), or the wait for it ended:
    /// route the QoS ≥ 1 messages that waited, in order, with the view as it is.
    async fn view_ready(&mut self, loaded: bool) {
        if !loaded {
            eprintln!(
                "cluster link: the interest view did not load within {VIEW_LOAD_WAIT_MS} ms; \
                 routing QoS 1/2 messages with what it holds"
            );
        }
        self.view_loaded = true;
        while let Some((e, ack, msg_id)) = self.unviewed.pop_front() {
            self.publish(e, ack, msg_id).await;
        }
    }

    /// Hand the storer the queue stores the release list allows now, in order; false
    /// when some could not be handed over (the storer is gone or full: done, none stored).
    fn start_stores(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(QUEUE_PUBLISH_WAIT_MS);
        let mut all = true;
        for id in self.pending.take_starts() {
            let Some((targets, p)) = self.pending.get(id) else {
                continue;
            };
            let prevs = self.pending.store_prevs(id);
            let job = store::StoreJob {
                id,
                to: targets
                    .iter()
                    .zip(prevs.into_iter().chain(std::iter::repeat(None)))
                    .map(|(n, prev)| store::Target {
                        node: n.clone(),
                        // A share group's queue, or a node's.
                        subject: if queue::is_group(n) {
                            self.prefix.shared(n)
                        } else {
                            self.prefix.queue(n)
                        },
                        prev,
                    })
                    .collect(),
                bytes: p.bytes.clone(),
                msg_id: p.msg_id.clone(),
                deadline,
            };
            if self.store_tx.try_send(job).is_err() {
                self.pending.stored(id, Vec::new());
                all = false;
            }
        }
        all
    }

    /// The queue stores of pending publish `id` are done: `stored` names the nodes whose
    /// queue holds it.
    async fn stored(&mut self, id: u64, stored: Vec<Arc<str>>) {
        self.pending.stored(id, stored);
        self.release_pending().await;
    }

    /// Send, in order, the pending publishes whose queue stores are done, and start the
    /// stores that may start.
    async fn release_pending(&mut self) {
        loop {
            self.release_done().await;
            if self.start_stores() {
                return;
            }
        }
    }

    async fn release_done(&mut self) {
        while let Some(r) = self.pending.next_release() {
            let stats = &self.out.stats;
            let (groups, nodes): (Vec<&str>, Vec<&str>) = r
                .stored
                .iter()
                .map(|n| &**n)
                .partition(|n| queue::is_group(n));
            stats
                .queued
                .fetch_add(nodes.len() as u64, Ordering::Relaxed);
            stats
                .shared_queued
                .fetch_add(groups.len() as u64, Ordering::Relaxed);
            stats.queue_failed.fetch_add(
                r.targets.saturating_sub(r.stored.len()) as u64,
                Ordering::Relaxed,
            );
            let headers = (!r.stored.is_empty() || !r.missed.is_empty()).then(|| {
                let mut h = HeaderMap::new();
                if !nodes.is_empty() {
                    h.insert(queue::QUEUED_HEADER, nodes.join(",").as_str());
                }
                if !groups.is_empty() {
                    h.insert(queue::SHARED_HEADER, groups.join(",").as_str());
                }
                if !r.missed.is_empty() {
                    // The nodes whose store it missed take this copy in their chain.
                    h.insert(queue::PREV_HEADER, queue::prev_list(&r.missed).as_str());
                }
                h
            });
            let p = r.item;
            self.core_publish(p.subject, headers, p.bytes).await;
            self.answer_published(p.ack);
        }
    }

    /// Publish on core NATS (bounded), counting the outcome.
    async fn core_publish(&mut self, subject: String, headers: Option<HeaderMap>, bytes: Bytes) {
        let stats = &self.out.stats;
        if self.client.connection_state() != async_nats::connection::State::Connected {
            LinkStats::add(&stats.down_dropped);
            return;
        }
        let sent = match headers {
            None => within(PUBLISH_WAIT_MS, self.client.publish(subject, bytes)).await,
            Some(h) => {
                let p = self.client.publish_with_headers(subject, h, bytes);
                within(PUBLISH_WAIT_MS, p).await
            }
        };
        if sent {
            LinkStats::add(&stats.published);
        } else {
            LinkStats::add(&stats.nats_errors);
        }
    }

    /// Tell the node that the message with `ack` left (the shard wakes with the batch).
    fn answer_published(&self, ack: Option<(usize, u64)>) {
        if let Some(ack) = ack {
            self.out.push_wake(FromLink::Published { ack });
        }
    }

    /// Acknowledge a queue message to JetStream: the node has it safe.
    async fn settle(&mut self, token: u64) {
        let Some(reply) = self.unsettled.remove(&token) else {
            return;
        };
        let stats = &self.out.stats;
        let sent = self.client.connection_state() == async_nats::connection::State::Connected
            && within(
                PUBLISH_WAIT_MS,
                self.client.publish(reply, Bytes::from_static(b"+ACK")),
            )
            .await;
        // An acknowledgement lost here brings the message again after the ack wait; the
        // duplicate filter then settles it without passing it on again.
        LinkStats::add(if sent {
            &stats.queue_settled
        } else {
            &stats.nats_errors
        });
    }

    /// Give a share group's message back to JetStream (no online member here): it comes
    /// again, to any node of the group, after `queue::SHARED_RETURN_DELAY`.
    async fn give_back(&mut self, token: u64) {
        let Some(reply) = self.unsettled.remove(&token) else {
            return;
        };
        let stats = &self.out.stats;
        let nak = format!(
            "-NAK {{\"delay\":{}}}",
            queue::SHARED_RETURN_DELAY.as_nanos()
        );
        let sent = self.client.connection_state() == async_nats::connection::State::Connected
            && within(
                PUBLISH_WAIT_MS,
                self.client.publish(reply, Bytes::from(nak)),
            )
            .await;
        // A lost NAK: the message comes again after the ack wait instead.
        LinkStats::add(if sent {
            &stats.shared_returned
        } else {
            &stats.nats_errors
        });
    }

    /// A message from a share group's queue, which JetStream handed to this node rather
    /// than to another node with members: passed on for one member here (with a token to
    /// settle it by, or to give it back with when no member is online). Not filtered for
    /// copies: the plain paths' copies are other deliveries, and a redelivery is a
    /// duplicate QoS 1 allows (QoS 2: `docs/cluster.md`, "Not done yet").
    fn shared_queued(&mut self, m: async_nats::Message, route: Route, delivered: i64, age_ms: u64) {
        let stats = &self.out.stats;
        let Some(reply) = m.reply.clone() else {
            LinkStats::add(&stats.malformed);
            return;
        };
        LinkStats::add(&stats.shared_received);
        if delivered > 1 {
            LinkStats::add(&stats.queue_redelivered);
        }
        let token = self.next_token;
        self.next_token += 1;
        if self.unsettled.len() >= UNSETTLED_MAX {
            self.unsettled.clear();
        }
        self.unsettled.insert(token, reply);
        let expired = |e: &mut Envelope| match e.expiry_secs {
            Some(left) => {
                let age_s = u32::try_from(age_ms / 1000).unwrap_or(u32::MAX);
                e.expiry_secs = Some(left.saturating_sub(age_s));
                age_s >= left
            }
            None => false,
        };
        let decoded = envelope::decode(&m.payload).map(|mut e| (expired(&mut e), e));
        let e = match decoded {
            Ok((false, e)) => e,
            decoded => {
                if decoded.is_err() {
                    LinkStats::add(&stats.malformed);
                }
                if !self.out.push(FromLink::Settle {
                    token,
                    dedupe: None,
                }) {
                    self.unsettled.remove(&token);
                }
                return;
            }
        };
        LinkStats::add(&stats.received);
        let pushed = self.out.push(FromLink::Message {
            route,
            envelope: Box::new(e),
            token: Some(token),
            dedupe: None,
        });
        if !pushed {
            self.unsettled.remove(&token);
        }
    }

    /// A message from this node's queue: passed on with a token to settle it by, or, if
    /// it is a copy of one already passed on (or expired meanwhile), settled through the
    /// node all the same, so the acknowledgement follows what came before.
    fn queued(&mut self, m: async_nats::Message, delivered: i64, age_ms: u64) {
        let stats = &self.out.stats;
        let Some(reply) = m.reply.clone() else {
            LinkStats::add(&stats.malformed);
            return;
        };
        LinkStats::add(&stats.queue_received);
        let token = self.next_token;
        self.next_token += 1;
        if self.unsettled.len() >= UNSETTLED_MAX {
            // Settles lost on the way (a full queue): those messages come again after the
            // ack wait, with new tokens.
            self.unsettled.clear();
        }
        self.unsettled.insert(token, reply);
        let settle_only = |st: &mut Self, dedupe: Option<u128>| {
            if !st.out.push(FromLink::Settle { token, dedupe }) {
                st.unsettled.remove(&token);
            }
        };
        let Ok(mut e) = envelope::decode(&m.payload) else {
            LinkStats::add(&stats.malformed);
            return settle_only(self, None);
        };
        if let Some(left) = e.expiry_secs {
            let age_s = u32::try_from(age_ms / 1000).unwrap_or(u32::MAX);
            if age_s >= left {
                return settle_only(self, None);
            }
            e.expiry_secs = Some(left - age_s);
        }
        if delivered > 1 {
            LinkStats::add(&stats.queue_redelivered);
        }
        // A QoS 2 message is known to the node by its message id, which every copy of it
        // carries (a redelivery, or a resend stored again under its stable id).
        let dedupe = (e.qos == crate::protocol::QoS::ExactlyOnce)
            .then(|| m.headers.as_ref()?.get(async_nats::header::NATS_MESSAGE_ID))
            .flatten()
            .map(|v| queue::received_id(v.as_str().as_bytes()));
        if e.origin == self.node || !first_copy(&mut self.seen, &e) {
            LinkStats::add(&self.out.stats.duplicates);
            return settle_only(self, dedupe);
        }
        LinkStats::add(&self.out.stats.received);
        // Every message of the queue is part of its topic's chain for this node.
        let prev = m
            .headers
            .as_ref()
            .and_then(|h| h.get(queue::PREV_HEADER))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        let (origin, topic, seq) = (e.origin.clone(), e.topic.clone(), e.seq);
        let m = FromLink::Message {
            route: Route::Plain,
            envelope: Box::new(e),
            token: Some(token),
            dedupe,
        };
        self.in_order((&origin, &topic, seq), prev, m);
    }

    /// Pass chained message `m` (`seq` from `origin` on `topic`, naming `prev`) on once
    /// the one it names was passed on, with whatever waited for it (`order`).
    fn in_order(
        &mut self,
        (origin, topic, seq): (&str, &str, u64),
        prev: Option<u64>,
        m: FromLink,
    ) {
        let mut out = Vec::new();
        let now = self.now_ms();
        if self.order.offer(origin, topic, seq, prev, now, m, &mut out) {
            LinkStats::add(&self.out.stats.order_held);
        }
        self.pass_on(out);
    }

    /// Push inbound messages to the node (the caller wakes it); a queue message that does
    /// not fit comes again after the ack wait.
    fn pass_on(&mut self, out: Vec<FromLink>) {
        for m in out {
            let token = match &m {
                FromLink::Message { token, .. } => *token,
                _ => None,
            };
            if !self.out.push(m) {
                if let Some(token) = token {
                    self.unsettled.remove(&token);
                }
            }
        }
        let expired = self.order.expired();
        self.out
            .stats
            .order_expired
            .store(expired, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn inbound(&mut self, (tag, m): Inbound) {
        let stats = &self.out.stats;
        let route = match &*tag {
            Tag::Takeover | Tag::State if m.payload.is_empty() => return self.alive(m.reply),
            Tag::Takeover => return self.takeover(&m.payload),
            Tag::State => return self.session_state(&m.payload),
            Tag::Queued { delivered, age_ms } => return self.queued(m, *delivered, *age_ms),
            Tag::SharedQueued {
                group,
                filter,
                delivered,
                age_ms,
            } => {
                let route = Route::Shared {
                    group: group.clone(),
                    filter: filter.clone(),
                };
                return self.shared_queued(m, route, *delivered, *age_ms);
            }
            Tag::Deliver(r) => r,
        };
        let mut chained = None;
        let from_queue = match route {
            // The nodes named here get this message from their queue.
            Route::Plain => m
                .headers
                .as_ref()
                .and_then(|h| h.get(queue::QUEUED_HEADER))
                .is_some_and(|v| queue::names(v.as_str(), &self.node)),
            // The groups named here get it from their group's queue.
            Route::Shared { group, filter } => m
                .headers
                .as_ref()
                .and_then(|h| h.get(queue::SHARED_HEADER))
                .is_some_and(|v| queue::names(v.as_str(), &subject::queue_group(group, filter))),
        };
        if from_queue {
            LinkStats::add(&stats.duplicates);
            return;
        }
        if matches!(route, Route::Plain) {
            // Its store for this node failed: this copy takes its place in the chain.
            let prevs = m.headers.as_ref().and_then(|h| h.get(queue::PREV_HEADER));
            chained = prevs.and_then(|v| queue::prev_in_list(v.as_str(), &self.node));
        }
        let Ok(e) = envelope::decode(&m.payload) else {
            LinkStats::add(&stats.malformed);
            return;
        };
        // Plain deliveries of our own messages were made locally; a shared one came back
        // because NATS chose this node for the group.
        let fresh = match route {
            Route::Plain => e.origin != self.node && first_copy(&mut self.seen, &e),
            Route::Shared { .. } => true,
        };
        if !fresh {
            LinkStats::add(&stats.duplicates);
            return;
        }
        LinkStats::add(&stats.received);
        let (origin, topic, seq) = (e.origin.clone(), e.topic.clone(), e.seq);
        let m = FromLink::Message {
            route: route.clone(),
            envelope: Box::new(e),
            token: None,
            dedupe: None,
        };
        match chained {
            Some(prev) => self.in_order((&origin, &topic, seq), prev, m),
            None => {
                self.out.push(m);
            }
        }
    }

    /// Send a session's state to node `to`: `u16 id length | client id | state`.
    async fn handover(&mut self, to: &str, client_id: &str, state: Vec<u8>) {
        let stats = &self.out.stats;
        let Ok(id_len) = u16::try_from(client_id.len()) else {
            LinkStats::add(&stats.too_large);
            return;
        };
        if !subject::valid_cluster_name(to) {
            LinkStats::add(&stats.malformed);
            return;
        }
        let mut payload = Vec::with_capacity(2 + client_id.len() + state.len());
        payload.extend_from_slice(&id_len.to_be_bytes());
        payload.extend_from_slice(client_id.as_bytes());
        payload.extend_from_slice(&state);
        let subject = self.prefix.control(&format!("state.{to}"));
        if !within(
            PUBLISH_WAIT_MS,
            self.client.publish(subject, payload.into()),
        )
        .await
        {
            LinkStats::add(&stats.nats_errors);
        }
    }

    fn session_state(&self, payload: &[u8]) {
        let parsed = payload
            .get(..2)
            .map(|n| usize::from(u16::from_be_bytes([n[0], n[1]])))
            .and_then(|n| Some((payload.get(2..2 + n)?, payload.get(2 + n..)?)))
            .and_then(|(id, rest)| Some((std::str::from_utf8(id).ok()?, rest)));
        match parsed {
            Some((client_id, state)) => {
                self.out.push(FromLink::SessionState {
                    client_id: client_id.to_string(),
                    state: state.to_vec(),
                });
            }
            None => LinkStats::add(&self.out.stats.malformed),
        }
    }

    /// An empty message on a control subject is a liveness probe (`shardmq cluster-forget`
    /// sends one before it removes a node): answer it with this node's name, off the loop.
    fn alive(&self, reply: Option<Subject>) {
        let Some(reply) = reply else {
            return;
        };
        let (client, name) = (self.client.clone(), Bytes::from(self.node.clone()));
        tokio::spawn(async move { within(PUBLISH_WAIT_MS, client.publish(reply, name)).await });
    }

    fn takeover(&self, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.split_once('\n'));
        match parsed {
            Some((by, client_id)) => {
                self.out.push(FromLink::TakenOver {
                    client_id: client_id.to_string(),
                    by: by.to_string(),
                });
            }
            None => LinkStats::add(&self.out.stats.malformed),
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

/// Pass a subscription's messages to the link loop until told to unsubscribe.
async fn forward(
    mut sub: Subscriber,
    tag: Arc<Tag>,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<LinkStats>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    loop {
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else { return };
                if tx.try_send((tag.clone(), m)).is_err() {
                    LinkStats::add(&stats.from_link_dropped);
                }
            }
            // A dropped `Stop` (the interest is gone) also ends the subscription.
            ack = &mut stop => {
                if sub.unsubscribe().await.is_err() {
                    LinkStats::add(&stats.nats_errors);
                }
                if let Ok(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }
}

/// Whether this is the first copy of `e` seen from its origin (within the window).
fn first_copy(seen: &mut HashMap<String, Window>, e: &Envelope) -> bool {
    if !seen.contains_key(&e.origin) && seen.len() >= ORIGINS_MAX {
        seen.clear();
    }
    let w = seen.entry(e.origin.clone()).or_default();
    if !w.set.insert(e.seq) {
        return false;
    }
    w.order.push_back(e.seq);
    if w.order.len() > DEDUP_WINDOW_MESSAGES {
        if let Some(old) = w.order.pop_front() {
            w.set.remove(&old);
        }
    }
    true
}
