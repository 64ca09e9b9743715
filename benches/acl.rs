//! `can_publish` against a 1,000-rule ACL file: uncached (the rule walk a new topic costs)
//! and through the per-link cache (what a repeated topic costs on the publish path).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardmq::auth::{Acl, AclCache, Client};

/// 1,000 rules: 900 literal and wildcard topics spread over 100 users, 99 for the benched
/// user, a deny, and patterns.
fn thousand_rules() -> String {
    let mut text = String::new();
    for u in 0..100 {
        text.push_str(&format!("user user{u}\n"));
        for r in 0..9 {
            text.push_str(&format!("topic readwrite site/{u}/device/{r}/+\n"));
        }
    }
    text.push_str("user bench\n");
    for r in 0..95 {
        text.push_str(&format!("topic write plant/{r}/line/+/temp\n"));
    }
    text.push_str("topic deny plant/13/line/#\n");
    text.push_str("pattern write clients/%c/#\npattern read clients/%u/in\npattern readwrite devices/%u/%c/+\n");
    text
}

fn acl(c: &mut Criterion) {
    let acl = Acl::parse(&thousand_rules(), "bench.acl").expect("valid ACL");
    let client = Client {
        username: Some("bench"),
        client_id: "bench-1",
    };
    let topic = "plant/42/line/7/temp";
    assert!(acl.can_publish(client, topic));
    c.bench_function("acl_can_publish_uncached_1000_rules", |b| {
        b.iter(|| acl.can_publish(black_box(client), black_box(topic)))
    });
    // A link reuses one shared string for a repeated topic: answered by its address.
    let shared: std::sync::Arc<str> = topic.into();
    let mut cache = AclCache::new();
    c.bench_function("acl_can_publish_cached_1000_rules", |b| {
        b.iter(|| cache.can_publish(&acl, black_box(client), black_box(&shared)))
    });
    // The same topic in a new string each time (another publisher): answered by contents.
    let copies: Vec<std::sync::Arc<str>> = (0..64).map(|_| topic.into()).collect();
    let mut i = 0;
    c.bench_function("acl_can_publish_cached_by_contents_1000_rules", |b| {
        b.iter(|| {
            i = (i + 1) % copies.len();
            cache.can_publish(&acl, black_box(client), black_box(&copies[i]))
        })
    });
}

criterion_group!(benches, acl);
criterion_main!(benches);
