use super::*;

/// Made by Debian's `mosquitto_passwd` 2.0.11 (`-b`, and `-H sha512` for carol).
const DEBIAN_FILE: &str = "\
alice:$7$101$eTYFhqzjb0Bdemyi$4rE0qQKqO+R5m8SrIkxYK7oCuq1+Cp8TPkQc5sjxB/sthY2Lc81gg0q63EBv6wQr09j2ndDlrIYnNrBw2hUrAw==
bob:$7$101$XN1NzZU72Dd7urKL$EDNc1RxtNxzETcFgab/z/DdBz4hQq5ZWkhytz5zEBx9loowHFPRjB4S52+HAz4Nr4oLA0gLZWwIAWZvfiSWE2A==
carol:$6$ZVBuTs/ovLa4fXZf$9L+BERNpILiVxTOuQnH8lRgU6BrxJEOirvjNA1HAcSaqTgMk3rqiMKdpXKaIh/nbrKatBG8q7enm1xEK2rMCPQ==
";

fn expect_error(text: &str, line: usize, needle: &str) {
    let e = PasswordFile::parse(text, "p.txt").expect_err(text);
    assert_eq!((e.file.as_str(), e.line), ("p.txt", line), "{text}: {e}");
    assert!(e.problem.contains(needle), "{text}: {e}");
}

#[test]
fn verifies_files_made_by_mosquitto_passwd() {
    let f = PasswordFile::parse(DEBIAN_FILE, "deb").expect("valid");
    assert_eq!(f.len(), 3);
    assert_eq!(f.verify("alice", b"secret"), Verdict::Ok);
    assert_eq!(
        f.verify("bob", "pässwörd with spaces".as_bytes()),
        Verdict::Ok
    );
    assert_eq!(f.verify("carol", b"hunter2"), Verdict::Ok);
    assert_eq!(f.verify("alice", b"Secret"), Verdict::BadPassword);
    assert_eq!(f.verify("carol", b""), Verdict::BadPassword);
    assert_eq!(f.verify("mallory", b"secret"), Verdict::UnknownUser);
}

#[test]
fn pbkdf2_round_trips_with_both_salt_sizes_and_any_iteration_count() {
    for (salt, iterations) in [(64, 1000), (12, 1), (12, 101), (64, 7)] {
        let h = Hash::new_pbkdf2(b"pw", salt, iterations).expect("valid");
        let line = format!("u:{}\n", h.encode());
        let f = PasswordFile::parse(&line, "t").expect("own output parses");
        assert_eq!(f.verify("u", b"pw"), Verdict::Ok, "{line}");
        assert_eq!(f.verify("u", b"pw "), Verdict::BadPassword, "{line}");
    }
    assert!(Hash::new_pbkdf2(b"pw", 16, 1000).is_err());
    assert!(Hash::new_pbkdf2(b"pw", 64, 0).is_err());
}

#[test]
fn argon2id_strings_verify_and_costs_are_bounded() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(1024, 1, 1, None).expect("params");
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
    let phc = a.hash_password(b"pw", &salt).expect("hash").to_string();
    let f = PasswordFile::parse(&format!("dan:{phc}\n"), "t").expect("valid");
    assert_eq!(f.verify("dan", b"pw"), Verdict::Ok);
    assert_eq!(f.verify("dan", b"px"), Verdict::BadPassword);
    let greedy = phc.replace("m=1024", "m=4000000");
    expect_error(&format!("dan:{greedy}\n"), 1, "limits");
}

#[test]
fn comments_blank_lines_and_blanks_around_fields_are_accepted() {
    let text = format!(
        "# head\n\n   \n  {}",
        DEBIAN_FILE.replace("alice:", "alice : ")
    );
    let f = PasswordFile::parse(&text, "t").expect("valid");
    assert_eq!(f.verify("alice", b"secret"), Verdict::Ok);
}

#[test]
fn malformed_lines_name_file_and_line_and_never_quote_the_password() {
    let ok = "alice:$7$101$eTYFhqzjb0Bdemyi$4rE0qQKqO+R5m8SrIkxYK7oCuq1+Cp8TPkQc5sjxB/sthY2Lc81gg0q63EBv6wQr09j2ndDlrIYnNrBw2hUrAw==\n";
    let cases: &[(&str, usize, &str)] = &[
        ("# c\nbob:plaintext-secret\n", 2, "plaintext"),
        ("just-a-name\n", 1, "no ':'"),
        (":$6$x$y\n", 1, "empty username"),
        ("u:$5$abc$def\n", 1, "unknown hash type"),
        ("u:$6$onlysalt\n", 1, "expected $6$"),
        ("u:$7$abc$eTYFhqzjb0Bdemyi$AAAA\n", 1, "not a number"),
        ("u:$7$0$eTYFhqzjb0Bdemyi$AAAA\n", 1, "outside"),
        (
            "u:$7$99999999999$eTYFhqzjb0Bdemyi$AAAA\n",
            1,
            "not a number",
        ),
        ("u:$7$101$eTYF$AAAA\n", 1, "salt of 3 bytes"),
        ("u:$7$101$!!!!$AAAA\n", 1, "not base64"),
        ("u:$7$101$eTYFhqzjb0Bdemyi$AAAA\n", 1, "hash of 3 bytes"),
        ("u:$7$101$eTYFhqzjb0Bdemyi\n", 1, "expected $7$"),
        ("u:$argon2id$garbage\n", 1, "argon2"),
        ("u:$6$a:b\n", 1, "more than one ':'"),
    ];
    for (text, line, needle) in cases {
        expect_error(text, *line, needle);
    }
    expect_error(&format!("{ok}{ok}"), 2, "already defined on line 1");
    let e = PasswordFile::parse("bob:plaintext-secret\n", "p").expect_err("plain");
    assert!(!e.to_string().contains("plaintext-secret"), "{e}");
    let long = format!("u:{}\n", "a".repeat(PASSWORD_LINE_BYTES_MAX));
    expect_error(&long, 1, "longer than");
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let e = PasswordFile::load(Path::new("/nonexistent/shardmq-pw")).expect_err("missing");
    assert_eq!(e.line, 0);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/shardmq-pw: cannot read"),
        "{e}"
    );
}

#[test]
fn an_empty_file_lets_nobody_in() {
    let f = PasswordFile::parse("# nobody\n", "t").expect("valid");
    assert!(f.is_empty());
    assert_eq!(f.verify("alice", b"secret"), Verdict::UnknownUser);
}

#[test]
fn mosquitto_sha512_construction_is_password_then_salt() {
    let salt = b"0123456789ab".to_vec();
    let mut d = Sha512::new();
    d.update(b"pw");
    d.update(&salt);
    let hash: [u8; 64] = d.finalize().into();
    let line = format!(
        "u:$6${}${}\n",
        STANDARD.encode(&salt),
        STANDARD.encode(hash)
    );
    let f = PasswordFile::parse(&line, "t").expect("valid");
    assert_eq!(f.verify("u", b"pw"), Verdict::Ok);
}

#[test]
fn the_fuzz_entry_accepts_its_seeds_and_junk() {
    fuzz_parse(DEBIAN_FILE.as_bytes());
    fuzz_parse(b"u:$7$1$AAAAAAAAAAAAAAAA$\n\xff");
    fuzz_parse(b"::::\n$6$:$7$\n");
    crate::auth::acl::fuzz_parse(b"user a\ntopic read +/#\npattern %u/%c\n");
    crate::auth::acl::fuzz_parse(b"topic deny\n");
}
