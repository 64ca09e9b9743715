use super::*;
use proptest::prelude::*;
use std::sync::Arc;

fn t(topic: &str) -> Arc<str> {
    topic.into()
}

fn anon(client_id: &str) -> Client<'_> {
    Client {
        username: None,
        client_id,
    }
}

fn user<'a>(name: &'a str, client_id: &'a str) -> Client<'a> {
    Client {
        username: Some(name),
        client_id,
    }
}

fn acl(text: &str) -> Acl {
    Acl::parse(text, "t.acl").expect("valid ACL")
}

const FILE: &str = "\
# anonymous
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared topic with spaces
topic allowed
user bob
topic read $SYS/broker/#
pattern write devices/%u/%c/#
pattern read inbox/%c
";

#[test]
fn anonymous_rules_are_the_lines_before_the_first_user() {
    let a = acl(FILE);
    assert!(a.can_read(anon("x"), "public/news"));
    assert!(!a.can_publish(anon("x"), "public/news"));
    assert!(
        !a.can_read(user("carol", "x"), "public/news"),
        "users do not get anonymous rules"
    );
    assert!(
        a.can_read(anon("x"), "inbox/x"),
        "patterns without %u apply to anonymous clients"
    );
    assert!(
        !a.can_publish(anon("x"), "devices/x/x/1"),
        "%u patterns skip anonymous clients"
    );
}

#[test]
fn user_blocks_deny_first_and_whole_topics_only() {
    let a = acl(FILE);
    let alice = user("alice", "c1");
    assert!(a.can_publish(alice, "alice/x/y"));
    assert!(
        !a.can_read(alice, "alice/secret"),
        "deny wins over readwrite alice/#"
    );
    assert!(!a.can_publish(alice, "alice/secret"));
    assert!(a.can_publish(alice, "shared topic with spaces"));
    assert!(a.can_publish(alice, "allowed") && a.can_read(alice, "allowed"));
    assert!(
        !a.can_publish(alice, "allowed/secret"),
        "A9: a literal rule is not a prefix"
    );
    assert!(a.can_publish(alice, "devices/alice/c1/temp"));
    assert!(
        !a.can_publish(alice, "devices/alice/c2/temp"),
        "%c is this client only"
    );
    assert!(!a.can_publish(user("carol", "c"), "alice/x"));
}

#[test]
fn dollar_topics_match_only_dollar_rules() {
    let a = acl("topic readwrite #\ntopic read +/x\nuser bob\ntopic read $SYS/broker/#\n");
    assert!(a.can_read(anon("c"), "a/b"));
    assert!(
        !a.can_read(anon("c"), "$SYS/broker/uptime"),
        "A2: # does not reach $SYS"
    );
    assert!(!a.can_read(anon("c"), "$SYS/x"));
    assert!(!a.can_publish(anon("c"), "$SYS/broker/x"));
    assert!(a.can_read(user("bob", "c"), "$SYS/broker/uptime"));
    assert!(!a.can_publish(user("bob", "c"), "$SYS/broker/uptime"));
}

#[test]
fn wildcard_identities_gain_nothing_through_patterns() {
    let a =
        acl("pattern readwrite devices/%u/#\npattern readwrite clients/%c\npattern read %c/in\n");
    for evil in ["+", "#", "a/b", "", "x\0y"] {
        let c = user(evil, evil);
        for t in [
            "devices/a/x",
            "devices/a/b/x",
            "clients/a",
            "clients/a/b",
            "a/b/in",
            "x/in",
        ] {
            assert!(
                !a.can_publish(c, t) && !a.can_read(c, t),
                "A7: {evil:?} on {t}"
            );
        }
    }
    let dollar = user("$SYS", "$SYS");
    assert!(
        !a.can_read(dollar, "$SYS/in"),
        "a pattern never becomes a $ rule"
    );
    assert!(
        a.can_read(dollar, "devices/$SYS/x"),
        "a $ inside a level is just a character"
    );
    assert!(a.can_publish(user("dev1", "c1"), "devices/dev1/t"));
}

#[test]
fn an_empty_file_denies_everything() {
    for text in ["", "# only comments\n\n", "user alice\n"] {
        let a = acl(text);
        let alice = user("alice", "c");
        assert!(
            !a.can_publish(alice, "a") && !a.can_read(alice, "a"),
            "{text:?}"
        );
        assert!(!a.can_subscribe(alice, "#"), "{text:?}");
        assert!(!a.can_read(anon("c"), "a"));
    }
}

#[test]
fn access_word_is_optional_and_user_names_may_have_spaces() {
    let a = acl("user John Smith\ntopic a/b\ntopic read read\n");
    let j = user("John Smith", "c");
    assert!(a.can_publish(j, "a/b") && a.can_read(j, "a/b"));
    // `topic read read`: access read, filter "read".
    assert!(a.can_read(j, "read") && !a.can_publish(j, "read"));
}

#[test]
fn errors_name_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("topic read a/#\nbogus x\n", 2, "unknown keyword 'bogus'"),
        ("user\n", 1, "'user' without a name"),
        ("topic read\n", 1, "missing topic filter"),
        ("\n\ntopic a/#/b\n", 3, "invalid topic filter 'a/#/b'"),
        ("pattern write a+/b\n", 1, "invalid topic filter"),
        ("topic\tread a\n", 1, "unknown keyword"),
    ];
    for (text, line, needle) in cases {
        let e = Acl::parse(text, "x.acl").expect_err(text);
        assert_eq!((e.file.as_str(), e.line), ("x.acl", *line), "{text}");
        assert!(e.problem.contains(needle), "{text}: {e}");
        assert!(e.to_string().starts_with(&format!("x.acl:{line}: ")));
    }
    let e = Acl::load(Path::new("/nonexistent/shardmq.acl")).expect_err("missing");
    assert_eq!(e.line, 0);
}

#[test]
fn subscribe_is_refused_when_nothing_could_ever_be_read() {
    let a = acl("user u\ntopic readwrite a/+\ntopic deny a/secret\ntopic write w/#\ntopic read test/#\ntopic deny test/nosubscribe\n");
    let u = user("u", "c");
    // A1: a user allowed a/+ subscribes to #, a/#, +/x.
    assert!(
        a.can_subscribe(u, "#"),
        "# overlaps a/+ (deliveries are filtered)"
    );
    assert!(a.can_subscribe(u, "a/#"));
    assert!(a.can_subscribe(u, "+/x"), "a/x is readable");
    assert!(!a.can_subscribe(u, "a/b/c"), "a/+ is one level");
    assert!(!a.can_subscribe(u, "a/secret"), "covered by a deny");
    assert!(!a.can_subscribe(u, "w/#"), "write only");
    assert!(!a.can_subscribe(u, "$SYS/#"));
    assert!(
        !a.can_subscribe(u, "test/nosubscribe"),
        "the paho 3.1.1 case"
    );
    assert!(a.can_subscribe(u, "test/other"));
    assert!(!a.can_subscribe(u, "a/#/x"), "invalid filter");
    assert!(a.can_publish(u, "a/b") && !a.can_publish(u, "a/b/c"));
}

#[test]
fn an_acl_can_be_shared_between_shards() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Acl>();
    assert!(
        acl("").generation() != acl("").generation(),
        "each load is a new generation"
    );
}

/// The oracle: a second reading of the file, straight from its text, and a linear scan with
/// [`topic::matches`]: any matching deny refuses, then any matching grant with the bit.
fn oracle(text: &str, client: Client<'_>, topic: &str, need: u8) -> bool {
    let mut block: Option<&str> = None;
    let (mut granted, mut denied) = (false, false);
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let (kind, access, filter) = match words.as_slice() {
            ["user", name] => {
                block = Some(name);
                continue;
            }
            [kind, access, filter] => (*kind, *access, filter.to_string()),
            _ => continue,
        };
        let filter = if kind == "pattern" {
            let id_ok = |v: &str| !v.is_empty() && !v.contains(['+', '#', '/', '\0']);
            if filter.contains("%u") && !client.username.is_some_and(id_ok) {
                continue;
            }
            if filter.contains("%c") && !id_ok(client.client_id) {
                continue;
            }
            let f = filter
                .replace("%u", client.username.unwrap_or(""))
                .replace("%c", client.client_id);
            if f.starts_with('$') && !filter.starts_with('$') {
                continue;
            }
            f
        } else if block == client.username {
            filter
        } else {
            continue;
        };
        if topic::matches(&filter, topic) {
            let bits = match access {
                "read" => READ,
                "write" => WRITE,
                "readwrite" => READ | WRITE,
                _ => DENY,
            };
            denied |= bits & DENY != 0;
            granted |= bits & need != 0;
        }
    }
    granted && !denied
}

fn rule_line() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "+", "%u", "%c", "$s"]);
    let filter = (prop::collection::vec(level, 1..=3), any::<bool>()).prop_map(|(ls, h)| {
        let f = ls.join("/");
        if h {
            format!("{f}/#")
        } else {
            f
        }
    });
    let kind = prop::sample::select(vec!["topic", "topic", "pattern", "user"]);
    let access = prop::sample::select(vec!["read", "write", "readwrite", "deny"]);
    let name = prop::sample::select(vec!["a", "b", "+"]);
    (kind, access, filter, name).prop_map(|(k, acc, f, n)| match k {
        "user" => format!("user {n}"),
        "topic" => format!("topic {acc} {}", f.replace('%', "p")),
        _ => format!("pattern {acc} {f}"),
    })
}

fn identity() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["a", "b", "+", "a/b", "", "$s"]).prop_map(String::from),
    )
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "$s", "z", ""]), 1..=4)
        .prop_map(|ls| ls.join("/"))
}

proptest! {
    #[test]
    fn decisions_agree_with_the_naive_oracle(
        lines in prop::collection::vec(rule_line(), 0..12),
        name in identity(),
        id in prop::sample::select(vec!["a", "b", "+", "#", "a/b", "c"]),
        topics in prop::collection::vec(topic_name(), 1..8),
    ) {
        let text = lines.join("\n");
        let a = acl(&text);
        let c = Client { username: name.as_deref(), client_id: id };
        let mut cache = AclCache::new();
        for t in &topics {
            let read = oracle(&text, c, t, READ);
            let write = oracle(&text, c, t, WRITE);
            prop_assert_eq!(a.can_read(c, t), read, "read {} in\n{}", t, text);
            prop_assert_eq!(a.can_publish(c, t), write, "write {} in\n{}", t, text);
            let shared: Arc<str> = t.as_str().into();
            prop_assert_eq!(cache.can_read(&a, c, &shared), read);
            prop_assert_eq!(cache.can_publish(&a, c, &shared), write);
            prop_assert_eq!(cache.can_read(&a, c, &shared), read);
        }
    }
}

proptest! {
    /// The cache against the oracle over a long random sequence of decisions: topics drawn
    /// from a pool of shared strings (answered by address) and fresh copies of them
    /// (answered by contents), with the ACL swapped for another (a reload) on the way.
    #[test]
    fn the_cache_agrees_with_the_oracle_across_addresses_copies_and_reloads(
        first in prop::collection::vec(rule_line(), 0..10),
        second in prop::collection::vec(rule_line(), 0..10),
        name in identity(),
        pool in prop::collection::vec(topic_name(), 1..24),
        steps in prop::collection::vec((0usize..24, any::<bool>(), any::<bool>(), 0u8..40), 1..120),
    ) {
        let texts = [first.join("\n"), second.join("\n")];
        let acls = [acl(&texts[0]), acl(&texts[1])];
        let c = Client { username: name.as_deref(), client_id: "c" };
        let shared: Vec<Arc<str>> = pool.iter().map(|t| t.as_str().into()).collect();
        let mut cache = AclCache::new();
        let mut current = 0;
        for (pick, copy, read, reload) in steps {
            if reload == 0 {
                current = 1 - current;
            }
            let t = &shared[pick % shared.len()];
            let topic: Arc<str> = if copy { t.as_ref().into() } else { t.clone() };
            let need = if read { READ } else { WRITE };
            let want = oracle(&texts[current], c, &topic, need);
            let got = if read {
                cache.can_read(&acls[current], c, &topic)
            } else {
                cache.can_publish(&acls[current], c, &topic)
            };
            prop_assert_eq!(got, want, "{} {} under\n{}", need, topic, texts[current]);
        }
    }
}

#[test]
fn the_cache_answers_repeats_and_forgets_on_reload() {
    let old = acl("topic readwrite a/#\n");
    let c = anon("c");
    let mut cache = AclCache::new();
    let ax = t("a/x");
    assert!(cache.can_publish(&old, c, &ax));
    assert!(cache.can_publish(&old, c, &ax), "by address");
    assert!(cache.can_read(&old, c, &t("a/x")), "by contents");
    assert_eq!(cache.stats(), (2, 1));
    let new = acl("topic read a/#\n");
    assert!(
        !cache.can_publish(&new, c, &ax),
        "a reload revokes at the next decision"
    );
    assert!(cache.can_read(&new, c, &ax));
    let long: Arc<str> = format!("a/{}", "x".repeat(70_000)).into();
    assert!(cache.can_read(&new, c, &long) && cache.can_read(&new, c, &long));
    // Many distinct topics: colliding slots are replaced, answers stay right.
    for i in 0..100 {
        assert!(cache.can_read(&new, c, &t(&format!("a/{i}"))));
        assert!(!cache.can_read(&new, c, &t(&format!("b/{i}"))));
    }
}
