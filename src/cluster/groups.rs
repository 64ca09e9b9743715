//! Removing a share group's JetStream queue once no node has members of the group any
//! more (`docs/cluster.md`, "Shared subscriptions at QoS 1/2", *When the last member
//! leaves*): its durable consumer, and the messages its subject got while it had none.
//!
//! Owns: the claim on a group's removal (key `<qname>` of bucket `smq_<cluster>_groups`,
//! created by compare-and-set: `removing <node>`, deleted when done), the check of the
//! interest bucket for members, and the removal itself. Invariants: a node removes a
//! group's queue only while it holds the claim, after reading the stream's last sequence
//! number *and then* finding no member entry of the group in the interest bucket (read
//! from the streams' leaders, not from a watch); it purges only the messages stored before
//! that sequence, so a member whose entry the check did not see (written after it) keeps
//! every message stored for it — those were stored after its entry, hence after the check.
//! A consumer whose description does not name its group (made by an earlier version) is
//! never removed. Every NATS wait is bounded by the caller's JetStream timeout. Must not
//! touch: the interest bucket (only read), the node queues, the link's state.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;

use super::subject::{queue_group, Prefix};
use super::{kv as buckets, queue};

/// A claim older than this (by the server's timestamp) was left by a node that died while
/// removing: another node takes it over.
pub const CLAIM_STALE: Duration = Duration::from_secs(60);
/// Nodes' member entries of one group looked at, at most (one subject per node that ever
/// had members of it).
const MEMBER_SUBJECTS_MAX: usize = 4096;

/// What a removal attempt found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Removed: the consumer deleted, `purged` messages of the group's subject dropped.
    Removed {
        /// Messages purged.
        purged: u64,
    },
    /// No such consumer (never made, or removed already): nothing to do.
    Absent,
    /// Some node has members again (its entry is in the interest bucket): kept.
    Members,
    /// Another node holds the claim: it removes the group.
    Claimed,
    /// The consumer does not say which group it serves (an earlier version made it): kept.
    Unknown,
}

/// The claim bucket, if a node has made it (`None`: no node of this version ever ran, so
/// none can be removing a group; `shardmq cluster-forget` never creates it).
pub async fn claims(js: &jetstream::Context, cluster: &str) -> Option<kv::Store> {
    js.get_key_value(buckets::groups_bucket_name(cluster))
        .await
        .ok()
}

/// Remove share group queue `qname` of cluster `cluster` if no node has members of it,
/// as node `me`, claiming it in `claims` first (`None`: without a claim).
pub async fn remove(
    js: &jetstream::Context,
    cluster: &str,
    prefix: &Prefix,
    qname: &str,
    claims: Option<&kv::Store>,
    me: &str,
) -> Result<Outcome, String> {
    let name = queue::shared_stream_name(cluster);
    let Some(stream) = lookup(js, &name).await? else {
        return Ok(Outcome::Absent);
    };
    let info = match stream.consumer_info(qname).await {
        Ok(i) => i,
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
            return Ok(Outcome::Absent)
        }
        Err(e) => return Err(format!("cannot read consumer {qname}: {e}")),
    };
    let Some(share) = info
        .config
        .description
        .filter(|d| group_of(d).as_deref() == Some(qname))
    else {
        return Ok(Outcome::Unknown);
    };
    let claim = match claims {
        Some(b) => match claim(b, qname, me).await? {
            Some(rev) => Some((b, rev)),
            None => return Ok(Outcome::Claimed),
        },
        None => None,
    };
    let done = remove_claimed(js, cluster, prefix, &stream, qname, &share).await;
    if let Some((b, rev)) = claim {
        // Left in place, the claim goes stale after `CLAIM_STALE` (and expires in the hour).
        let _ = b.delete_expect_revision(qname, Some(rev)).await;
    }
    done
}

/// The queue name of share filter `$share/G/F` (a consumer's description).
pub fn group_of(share: &str) -> Option<String> {
    match crate::topic::parse_filter(share) {
        Ok(crate::topic::FilterKind::Shared(sh)) => Some(queue_group(sh.group, sh.filter)),
        _ => None,
    }
}

async fn remove_claimed(
    js: &jetstream::Context,
    cluster: &str,
    prefix: &Prefix,
    stream: &Stream,
    qname: &str,
    share: &str,
) -> Result<Outcome, String> {
    // Read before the check: what is stored from here on may be for a member the check
    // cannot see yet, and stays.
    let info = stream
        .get_info()
        .await
        .map_err(|e| format!("cannot read the share groups' stream: {e}"))?;
    let before = info.state.last_sequence.saturating_add(1);
    if members_anywhere(js, cluster, share).await? {
        return Ok(Outcome::Members);
    }
    match stream.delete_consumer(qname).await {
        Ok(_) => {}
        Err(e) => match e.kind() {
            jetstream::stream::ConsumerErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
            {
                return Ok(Outcome::Absent)
            }
            _ => return Err(format!("cannot delete consumer {qname}: {e}")),
        },
    }
    let purged = stream
        .purge()
        .filter(prefix.shared(qname))
        .sequence(before)
        .await
        .map_err(|e| format!("cannot purge share group queue {qname}: {e}"))?;
    Ok(Outcome::Removed {
        purged: purged.purged,
    })
}

/// Claim `qname`'s removal for `me`: its revision, or `None` if another node holds a
/// fresh claim.
async fn claim(b: &kv::Store, qname: &str, me: &str) -> Result<Option<u64>, String> {
    let value = bytes::Bytes::from(format!("removing {me}"));
    match b.create(qname, value.clone()).await {
        Ok(rev) => return Ok(Some(rev)),
        Err(e) if matches!(e.kind(), kv::CreateErrorKind::AlreadyExists) => {}
        Err(e) => return Err(format!("cannot claim {qname}: {e}")),
    }
    let entry = b
        .entry(qname)
        .await
        .map_err(|e| format!("cannot read the claim on {qname}: {e}"))?;
    let Some(e) = entry else {
        return Ok(None);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = now.saturating_sub(u64::try_from(e.created.unix_timestamp()).unwrap_or(0));
    let stale = e.operation != kv::Operation::Put || age > CLAIM_STALE.as_secs();
    if !stale {
        return Ok(None);
    }
    Ok(b.update(qname, value, e.revision).await.ok())
}

/// Whether the interest bucket holds a member entry (`<node>.<hash of share>`) of any
/// node: the last message of each such key, read from the bucket's leader.
pub async fn members_anywhere(
    js: &jetstream::Context,
    cluster: &str,
    share: &str,
) -> Result<bool, String> {
    let [_, _, bucket, _] = buckets::bucket_names(cluster);
    let Some(stream) = lookup(js, &format!("KV_{bucket}")).await? else {
        return Ok(false);
    };
    let filter = format!("$KV.{bucket}.*.{}", buckets::key(share));
    let mut subjects = stream
        .info_with_subjects(&filter)
        .await
        .map_err(|e| format!("cannot list {filter}: {e}"))?
        .take(MEMBER_SUBJECTS_MAX);
    let mut listed = Vec::new();
    while let Some(s) = subjects.next().await {
        let (subject, _) = s.map_err(|e| format!("cannot list {filter}: {e}"))?;
        listed.push(subject);
    }
    for subject in listed {
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => {
                let op = m.headers.get("KV-Operation").map(|v| v.as_str());
                if !matches!(op, Some("DEL" | "PURGE")) {
                    return Ok(true);
                }
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {}
            Err(e) => return Err(format!("cannot read {subject}: {e}")),
        }
    }
    Ok(false)
}

/// Stream `name`, or `None` if it does not exist.
pub(super) async fn lookup(js: &jetstream::Context, name: &str) -> Result<Option<Stream>, String> {
    match js.get_stream(name).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(format!("cannot read stream {name}: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_description_names_its_group() {
        assert_eq!(
            group_of("$share/g/a/#").as_deref(),
            Some(queue_group("g", "a/#").as_str())
        );
        for bad in ["a/#", "$share/g", "", "$share//a"] {
            assert_eq!(group_of(bad), None, "{bad}");
        }
    }
}
