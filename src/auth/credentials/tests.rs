//! Credentials-file tests: a table of bad lines, each naming its line and problem.

use super::*;

const STORED: &str = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
const SERVER: &str = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

fn line(user: &str, iterations: &str, salt: &str) -> String {
    format!("{user}:SCRAM-SHA-256${iterations}:{salt}${STORED}:{SERVER}")
}

fn expect_parse(text: &str) -> ScramCredentials {
    match ScramCredentials::parse(text, "creds.txt") {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn expect_error(text: &str) -> CredentialsError {
    match ScramCredentials::parse(text, "creds.txt") {
        Ok(c) => panic!("parsed {} users from bad text {text:?}", c.len()),
        Err(e) => e,
    }
}

#[test]
fn good_file_with_comments_blank_lines_and_crlf() {
    let text = format!(
        "\u{feff}# users\r\n\r\n  {}  \r\n\t# indented comment\n{}\n{}",
        line("alice", "4096", SALT),
        line("bob:with:colons", "10000000", SALT),
        line("ünïcode $name", "4096", "AAAAAAAAAAA="),
    );
    let creds = expect_parse(&text);
    assert_eq!(creds.len(), 3);
    let alice = creds.get("alice").expect("alice");
    assert_eq!(alice.iterations(), 4096);
    assert_eq!(keys::b64(alice.salt()), SALT);
    assert_eq!(keys::b64(alice.stored_key()), STORED);
    assert_eq!(keys::b64(alice.server_key()), SERVER);
    assert_eq!(
        creds.get("bob:with:colons").map(|e| e.iterations()),
        Some(10_000_000)
    );
    assert_eq!(creds.get("ünïcode $name").map(|e| e.salt().len()), Some(8));
    assert!(creds.get("ALICE").is_none());
}

#[test]
fn empty_file_means_nobody() {
    let texts = ["", "\n\n", "# only comments\n  # more\n"];
    let parsed = texts.iter().map(|t| expect_parse(t));
    for creds in parsed.chain([ScramCredentials::default()]) {
        assert!(creds.is_empty());
        let (decoy, known) = creds.entry_or_decoy("alice").expect("decoy");
        assert!(!known);
        assert_eq!((decoy.iterations(), decoy.salt().len()), (4096, 16));
    }
}

#[test]
fn bad_line_table() {
    let long_user = "u".repeat(USERNAME_BYTES_MAX + 1);
    let cases: Vec<(String, &str)> = vec![
        (
            line("a", "4095", SALT),
            "iteration count 4095 is below 4096 (too weak)",
        ),
        (
            line("a", "0", SALT),
            "iteration count 0 is below 4096 (too weak)",
        ),
        (
            line("a", "10000001", SALT),
            "iteration count 10000001 is above 10000000 (too costly)",
        ),
        (
            line("a", "99999999999", SALT),
            "iteration count '99999999999' is not a number",
        ),
        (
            line("a", "4096x", SALT),
            "iteration count '4096x' is not a number",
        ),
        (line("a", "", SALT), "iteration count '' is not a number"),
        (line("a", "4096", "!!!!"), "salt is not valid base64"),
        (line("a", "4096", "QUJD"), "salt is 3 bytes, want 8 to 64"),
        (line("", "4096", SALT), "empty username"),
        (
            line("a\u{7}b", "4096", SALT),
            "username contains a control character",
        ),
        (
            line("a ", "4096", SALT),
            "username has leading or trailing whitespace",
        ),
        (
            line(&long_user, "4096", SALT),
            "username longer than 256 bytes",
        ),
        (
            format!("a:SCRAM-SHA-1$4096:{SALT}${STORED}:{SERVER}"),
            "unsupported scheme 'SCRAM-SHA-1' (only SCRAM-SHA-256)",
        ),
        (
            format!("a:SCRAM-SHA-256$4096:{SALT}$AAAA:{SERVER}"),
            "StoredKey is not 32 bytes of base64 (44 characters)",
        ),
        (
            format!("a:SCRAM-SHA-256$4096:{SALT}${STORED}:{STORED}x"),
            "ServerKey is not 32 bytes of base64 (44 characters)",
        ),
        (
            format!("a:SCRAM-SHA-256$4096:{SALT}${STORED}"),
            "expected username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
        ),
        (
            format!("a:SCRAM-SHA-256:4096:{SALT}${STORED}:{SERVER}"),
            "expected username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
        ),
        (
            format!("a:SCRAM-SHA-256$4096:{SALT}:{STORED}:{SERVER}"),
            "expected username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
        ),
        (
            "alice".to_owned(),
            "expected username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
        ),
        (
            "alice:plaintext-password".to_owned(),
            "expected username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
        ),
        (
            "x".repeat(CREDENTIALS_LINE_BYTES_MAX + 1),
            "line longer than 1024 bytes",
        ),
    ];
    for (bad, problem) in cases {
        // The bad line sits on line 3, after a comment and a good line.
        let text = format!(
            "# header\n{}\n{bad}\n{}\n",
            line("ok", "4096", SALT),
            line("z", "4096", SALT)
        );
        let err = expect_error(&text);
        assert_eq!(
            (err.file.as_str(), err.line, err.problem.as_str()),
            ("creds.txt", 3, problem),
            "line {bad:?}"
        );
    }
}

#[test]
fn duplicate_user_names_both_lines() {
    let text = format!(
        "{}\n\n{}\n",
        line("alice", "4096", SALT),
        line("alice", "8192", SALT)
    );
    let err = expect_error(&text);
    assert_eq!(
        err.to_string(),
        "creds.txt:3: duplicate user 'alice' (first defined on line 1)"
    );
}

#[test]
fn error_display_forms() {
    let on_line = CredentialsError {
        file: "f".into(),
        line: 7,
        problem: "p".into(),
    };
    let whole = CredentialsError {
        file: "f".into(),
        line: 0,
        problem: "p".into(),
    };
    assert_eq!(on_line.to_string(), "f:7: p");
    assert_eq!(whole.to_string(), "f: p");
}

#[test]
fn load_reads_file_and_reports_problems() {
    let dir = std::env::temp_dir().join(format!("shardmq-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.txt");
    std::fs::write(&good, format!("# ok\n{}\n", line("alice", "4096", SALT))).expect("write");
    assert_eq!(ScramCredentials::load(&good).map(|c| c.len()), Ok(1));

    let bad_utf8 = dir.join("bad-utf8.txt");
    std::fs::write(&bad_utf8, b"# ok\n# ok\nalice\xff\n").expect("write");
    let err = ScramCredentials::load(&bad_utf8).expect_err("bad UTF-8");
    assert_eq!((err.line, err.problem.as_str()), (3, "not UTF-8"));
    assert!(err.file.ends_with("bad-utf8.txt"));

    let missing = dir.join("missing.txt");
    let err = ScramCredentials::load(&missing).expect_err("missing");
    assert_eq!(err.line, 0);
    assert!(err.to_string().contains("missing.txt: "), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn oversized_text_is_refused() {
    let text = "#".repeat(CREDENTIALS_FILE_BYTES_MAX + 1);
    let err = expect_error(&text);
    assert_eq!(
        (err.line, err.problem.as_str()),
        (0, "file larger than 16 MiB")
    );
}

#[test]
fn scram_entry_produces_a_parsable_line() {
    let entry = scram_entry("alice", "pw", 4096).expect("entry");
    let again = scram_entry("alice", "pw", 4096).expect("entry");
    assert_ne!(entry, again, "salt must be random");
    let creds = expect_parse(&entry);
    let parsed = creds.get("alice").expect("alice");
    assert_eq!(
        (parsed.iterations(), parsed.salt().len()),
        (4096, GENERATED_SALT_BYTES)
    );
}

#[test]
fn scram_entry_refuses_bad_arguments() {
    let long_password = "p".repeat(PASSWORD_BYTES_MAX + 1);
    let cases = [
        (
            "alice",
            "pw",
            4095,
            "iteration count 4095 is below 4096 (too weak)",
        ),
        (
            "alice",
            "pw",
            10_000_001,
            "iteration count 10000001 is above 10000000 (too costly)",
        ),
        ("", "pw", 4096, "empty username"),
        (
            "#alice",
            "pw",
            4096,
            "username starts with '#' (would read as a comment)",
        ),
        (
            "alice",
            &long_password,
            4096,
            "password longer than 1024 bytes",
        ),
    ];
    for (user, password, iterations, problem) in cases {
        let err = scram_entry(user, password, iterations).expect_err("must fail");
        assert_eq!(err.to_string(), format!("scram_entry: {problem}"));
    }
}

#[test]
fn decoy_follows_the_typical_entry() {
    let text = [
        line("a", "8192", SALT),
        line("b", "8192", SALT),
        line("c", "4096", "AAAAAAAAAAA="),
    ]
    .join("\n");
    let creds = expect_parse(&text);
    let (decoy, known) = creds.entry_or_decoy("nobody").expect("decoy");
    assert!(!known);
    assert_eq!((decoy.iterations(), decoy.salt().len()), (8192, 16));
    let (real, known) = creds.entry_or_decoy("c").expect("real");
    assert!(known);
    assert_eq!(real.iterations(), 4096);
}
