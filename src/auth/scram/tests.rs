//! SCRAM exchange tests: the RFC 7677 vector, round trips, failures, and malformed-input
//! tables written as literal messages.

use super::*;
use crate::auth::credentials::entry_line_with_salt;
use crate::auth::{
    scram_entry, PASSWORD_BYTES_MAX, SCRAM_MESSAGE_BYTES_MAX, SERVER_ERROR_BYTES_MAX,
    USERNAME_BYTES_MAX,
};

/// RFC 7677 §3: user "user", password "pencil".
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// The RFC 7677 user's credentials line (derived once by `rfc_line_derives_from_password`),
/// so most tests need no PBKDF2.
const RFC_LINE: &str = "user:SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
                        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                        wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

fn creds(text: &str) -> ScramCredentials {
    match ScramCredentials::parse(text, "test") {
        Ok(c) => c,
        Err(e) => panic!("test credentials do not parse: {e}"),
    }
}

fn rfc_creds() -> ScramCredentials {
    creds(RFC_LINE)
}

fn expect_start(creds: &ScramCredentials, first: &[u8]) -> (ScramServer, String) {
    match ScramServer::start_with_nonce(creds, first, RFC_SERVER_NONCE) {
        Ok((server, msg)) => (server, text(msg)),
        Err(e) => panic!("start failed: {e}"),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("SCRAM output is UTF-8")
}

#[test]
fn rfc_line_derives_from_password() {
    let salt = keys::unb64("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
    assert_eq!(
        entry_line_with_salt("user", "pencil", &salt, 4096),
        RFC_LINE
    );
}

#[test]
fn rfc7677_vector_server_side() {
    let (server, server_first) = expect_start(&rfc_creds(), RFC_CLIENT_FIRST.as_bytes());
    assert_eq!(server_first, RFC_SERVER_FIRST);
    let (user, server_final) = server.finish(RFC_CLIENT_FINAL.as_bytes()).expect("finish");
    assert_eq!(user, "user");
    assert_eq!(text(server_final), RFC_SERVER_FINAL);
}

#[test]
fn rfc7677_vector_client_side() {
    let (mut client, first) =
        ScramClient::with_nonce("user", "pencil", RFC_CLIENT_NONCE).expect("client");
    assert_eq!(text(first), RFC_CLIENT_FIRST);
    let last = client
        .handle_server_first(RFC_SERVER_FIRST.as_bytes())
        .expect("server-first");
    assert_eq!(text(last), RFC_CLIENT_FINAL);
    assert_eq!(
        client.verify_server_final(RFC_SERVER_FINAL.as_bytes()),
        Ok(())
    );
    let forged = "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(
        client.verify_server_final(forged.as_bytes()),
        Err(ScramError::BadServerSignature)
    );
}

/// Runs a whole exchange with random nonces; returns the server's result.
fn exchange(creds: &ScramCredentials, user: &str, password: &str) -> Result<String, ScramError> {
    let (mut client, first) = ScramClient::new(user, password)?;
    let (server, server_first) = ScramServer::start(creds, &first)?;
    let last = client.handle_server_first(&server_first)?;
    let (name, server_final) = server.finish(&last)?;
    client.verify_server_final(&server_final)?;
    Ok(name)
}

#[test]
fn round_trip_with_generated_entry() {
    let line = scram_entry("al,ice=1", "s3cret", 4096).expect("entry");
    let creds = creds(&format!("# generated\n\n{line}\n"));
    assert_eq!(
        exchange(&creds, "al,ice=1", "s3cret"),
        Ok("al,ice=1".to_owned())
    );
}

#[test]
fn wrong_password_is_bad_credentials() {
    let err = exchange(&rfc_creds(), "user", "pencil2").expect_err("must fail");
    assert_eq!(err, ScramError::UnknownUserOrBadProof);
    assert!(err.is_bad_credentials());
}

#[test]
fn unknown_user_looks_real_then_fails_at_finish() {
    let creds = rfc_creds();
    let first = |user: &str| format!("n,,n={user},r={RFC_CLIENT_NONCE}");
    let (_, real) = expect_start(&creds, first("user").as_bytes());
    let (server, decoy) = expect_start(&creds, first("mallory").as_bytes());
    let (_, again) = expect_start(&creds, first("mallory").as_bytes());
    let (_, other) = expect_start(&creds, first("eve").as_bytes());
    assert_eq!(decoy, again, "decoy must be deterministic per user");
    assert_ne!(decoy, other, "decoy salt must differ per user");
    assert_eq!(shape(&decoy), shape(&real));
    // Even a proof computed for the decoy salt fails, with the wrong-password error.
    let (mut client, _) =
        ScramClient::with_nonce("mallory", "any", RFC_CLIENT_NONCE).expect("client");
    let last = client
        .handle_server_first(decoy.as_bytes())
        .expect("decoy accepted");
    assert_eq!(server.finish(&last), Err(ScramError::UnknownUserOrBadProof));
}

/// A server-first-message with the salt replaced by its length: what an observer compares.
fn shape(server_first: &str) -> String {
    server_first
        .split(',')
        .map(|attr| match attr.split_once('=') {
            Some(("s", salt)) => format!("s:{}", keys::unb64(salt).map_or(0, |s| s.len())),
            _ => attr.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn empty_credentials_let_nobody_in() {
    let (mut client, first) =
        ScramClient::with_nonce("user", "pencil", RFC_CLIENT_NONCE).expect("client");
    let (server, server_first) = expect_start(&creds("# nobody\n"), &first);
    let last = client
        .handle_server_first(server_first.as_bytes())
        .expect("decoy");
    assert_eq!(server.finish(&last), Err(ScramError::UnknownUserOrBadProof));
}

#[test]
fn gs2_y_flag_and_matching_authzid_are_accepted() {
    let first = format!("y,a=user,n=user,r={RFC_CLIENT_NONCE},x=ignored");
    let (server, _) = expect_start(&rfc_creds(), first.as_bytes());
    // For "y,a=user," the channel binding echo is base64("y,a=user,").
    let nonce = format!("{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
    let last = format!(
        "c={},r={nonce},p={}",
        keys::b64(b"y,a=user,"),
        keys::b64(&[0; 32])
    );
    // The proof is wrong, but everything before it was accepted.
    assert_eq!(
        server.finish(last.as_bytes()),
        Err(ScramError::UnknownUserOrBadProof)
    );
}

#[test]
fn escaped_username_is_unescaped() {
    let first = format!("n,,n=a=2Cb=3Dc,r={RFC_CLIENT_NONCE}");
    let (server, _) = expect_start(&rfc_creds(), first.as_bytes());
    assert_eq!(server.claimed_username(), "a,b=c");
}

#[test]
fn client_first_malformed_table() {
    let long = format!("n,,n=user,r={}", "x".repeat(SCRAM_MESSAGE_BYTES_MAX));
    let long_name = format!("n,,n={},r=abc", "u".repeat(USERNAME_BYTES_MAX + 1));
    let cases: &[(&[u8], ScramError)] = &[
        (b"", ScramError::Malformed("empty message")),
        (
            b"n,,n=user,r=a\xff",
            ScramError::Malformed("message is not UTF-8"),
        ),
        (
            long.as_bytes(),
            ScramError::Malformed("message longer than 4096 bytes"),
        ),
        (
            b"n=user,r=abc",
            ScramError::Malformed("bad GS2 channel-binding flag"),
        ),
        (b"n", ScramError::Malformed("missing GS2 header")),
        (b"n,", ScramError::Malformed("missing GS2 header")),
        (
            b"x,,n=user,r=abc",
            ScramError::Malformed("bad GS2 channel-binding flag"),
        ),
        (
            b"p=tls-unique,,n=user,r=abc",
            ScramError::ChannelBindingUnsupported,
        ),
        (
            b"n,,m=ext,n=user,r=abc",
            ScramError::MandatoryExtensionUnsupported,
        ),
        (
            b"n,,r=abc,n=user",
            ScramError::Malformed("expected n=username"),
        ),
        (
            b"n,,n=,r=abc",
            ScramError::Malformed("attribute is not of the form a=value"),
        ),
        (b"n,,n=user", ScramError::Malformed("expected r=nonce")),
        (
            b"n,,n=user,x=abc",
            ScramError::Malformed("expected r=nonce"),
        ),
        (
            b"n,,n=us=2Xer,r=abc",
            ScramError::Malformed("bad escape or NUL in username"),
        ),
        (
            b"n,,n=us\0er,r=abc",
            ScramError::Malformed("bad escape or NUL in username"),
        ),
        (
            b"n,,n=user=,r=abc",
            ScramError::Malformed("bad escape or NUL in username"),
        ),
        (
            long_name.as_bytes(),
            ScramError::Malformed("username longer than 256 bytes"),
        ),
        (
            b"n,,n=user,r=ab\x7fc",
            ScramError::Malformed("nonce empty, too long or not printable"),
        ),
        (
            b"n,,n=user,r=ab c",
            ScramError::Malformed("nonce empty, too long or not printable"),
        ),
        (
            b"n,,n=user,r=abc,",
            ScramError::Malformed("attribute is not of the form a=value"),
        ),
        (
            b"n,,n=user,r=abc,1=x",
            ScramError::Malformed("attribute is not of the form a=value"),
        ),
        (
            b"n,a=bob,n=user,r=abc",
            ScramError::Malformed("authzid differs from username"),
        ),
        (b"n,bob,n=user,r=abc", ScramError::Malformed("bad authzid")),
    ];
    let creds = rfc_creds();
    for (input, want) in cases {
        let got = ScramServer::start(&creds, input).map(|_| ());
        assert_eq!(
            got,
            Err(want.clone()),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn client_final_malformed_table() {
    let nonce = format!("{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
    let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let long = format!(
        "c=biws,r={nonce},x={},{proof}",
        "y".repeat(SCRAM_MESSAGE_BYTES_MAX)
    );
    let cases: Vec<(Vec<u8>, ScramError)> = vec![
        (b"".to_vec(), ScramError::Malformed("empty message")),
        (
            long.into_bytes(),
            ScramError::Malformed("message longer than 4096 bytes"),
        ),
        (
            b"c=biws,r=\xff,p=x".to_vec(),
            ScramError::Malformed("message is not UTF-8"),
        ),
        (
            format!("c=biws,r={nonce}").into_bytes(),
            ScramError::Malformed("missing proof"),
        ),
        (
            format!("r={nonce},c=biws,{proof}").into_bytes(),
            ScramError::Malformed("expected c=channel-binding"),
        ),
        (
            format!("c=eSws,r={nonce},{proof}").into_bytes(),
            ScramError::Malformed("channel binding does not echo the GS2 header"),
        ),
        (
            format!("c=b!ws,r={nonce},{proof}").into_bytes(),
            ScramError::Malformed("channel binding does not echo the GS2 header"),
        ),
        (
            format!("c=biws,{proof}").into_bytes(),
            ScramError::Malformed("expected r=nonce"),
        ),
        (
            format!("c=biws,r={RFC_CLIENT_NONCE},{proof}").into_bytes(),
            ScramError::Malformed("nonce does not match"),
        ),
        (
            format!("c=biws,r={nonce}X,{proof}").into_bytes(),
            ScramError::Malformed("nonce does not match"),
        ),
        (
            format!("c=biws,r={nonce},p=not-base64!").into_bytes(),
            ScramError::Malformed("proof is not 32 bytes of base64"),
        ),
        (
            format!("c=biws,r={nonce},p=c2hvcnQ=").into_bytes(),
            ScramError::Malformed("proof is not 32 bytes of base64"),
        ),
        (
            format!("c=biws,r={nonce},{proof},x=trailing").into_bytes(),
            ScramError::Malformed("proof is not 32 bytes of base64"),
        ),
        (
            format!("c=biws,r={nonce},=bad,{proof}").into_bytes(),
            ScramError::Malformed("attribute is not of the form a=value"),
        ),
    ];
    let creds = rfc_creds();
    for (input, want) in cases {
        let (server, _) = expect_start(&creds, RFC_CLIENT_FIRST.as_bytes());
        let got = server.finish(&input).map(|_| ());
        assert_eq!(
            got,
            Err(want),
            "input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn client_side_malformed_table() {
    let cases: &[(&[u8], ScramError)] = &[
        (b"", ScramError::Malformed("empty message")),
        (
            b"m=x,r=rOprNGfwEbeRWgbNEkqOabc,s=QUJDREVGR0g=,i=4096",
            ScramError::MandatoryExtensionUnsupported,
        ),
        (
            b"s=QUJDREVGR0g=,i=4096",
            ScramError::Malformed("expected r=nonce"),
        ),
        (
            b"r=other,s=QUJDREVGR0g=,i=4096",
            ScramError::Malformed("server nonce does not extend the client nonce"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqO,s=QUJDREVGR0g=,i=4096",
            ScramError::Malformed("server nonce does not extend the client nonce"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOabc,s=!!,i=4096",
            ScramError::Malformed("salt is not 1 to 64 bytes of base64"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOabc,i=4096",
            ScramError::Malformed("expected s=salt"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOabc,s=QUJDREVGR0g=",
            ScramError::Malformed("expected i=iteration-count"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOabc,s=QUJDREVGR0g=,i=4095",
            ScramError::Malformed("iteration count out of range"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOabc,s=QUJDREVGR0g=,i=10000001",
            ScramError::Malformed("iteration count out of range"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOabc,s=QUJDREVGR0g=,i=-1",
            ScramError::Malformed("iteration count is not a number"),
        ),
        (
            b"r=rOprNGfwEbeRWgbNEkqOabc,s=QUJDREVGR0g=,i=99999999999",
            ScramError::Malformed("iteration count is not a number"),
        ),
    ];
    for (input, want) in cases {
        let (mut client, _) =
            ScramClient::with_nonce("user", "pencil", RFC_CLIENT_NONCE).expect("client");
        let got = client.handle_server_first(input).map(|_| ());
        assert_eq!(
            got,
            Err(want.clone()),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn client_server_final_handling() {
    let (mut client, _) =
        ScramClient::with_nonce("user", "pencil", RFC_CLIENT_NONCE).expect("client");
    assert_eq!(
        client.verify_server_final(RFC_SERVER_FINAL.as_bytes()),
        Err(ScramError::Malformed("no server-first-message handled yet"))
    );
    client
        .handle_server_first(RFC_SERVER_FIRST.as_bytes())
        .expect("server-first");
    assert_eq!(
        client.handle_server_first(RFC_SERVER_FIRST.as_bytes()),
        Err(ScramError::Malformed(
            "server-first-message already handled"
        ))
    );
    let long_error = format!("e={}", "é".repeat(200));
    match client.verify_server_final(long_error.as_bytes()) {
        Err(ScramError::ServerRejected(e)) => assert!(e.len() <= SERVER_ERROR_BYTES_MAX),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        client.verify_server_final(b"e=invalid-proof"),
        Err(ScramError::ServerRejected("invalid-proof".to_owned()))
    );
    assert_eq!(
        client.verify_server_final(b"x=1"),
        Err(ScramError::Malformed("expected v=verifier or e=error"))
    );
    let with_ext = format!("{RFC_SERVER_FINAL},x=ext");
    assert_eq!(client.verify_server_final(with_ext.as_bytes()), Ok(()));
}

#[test]
fn client_rejects_bad_arguments() {
    let long_user = "u".repeat(USERNAME_BYTES_MAX + 1);
    let long_password = "p".repeat(PASSWORD_BYTES_MAX + 1);
    for (user, password) in [
        ("", "p"),
        ("a\0b", "p"),
        (&long_user, "p"),
        ("u", &long_password),
    ] {
        assert!(matches!(
            ScramClient::new(user, password),
            Err(ScramError::Malformed(_))
        ));
    }
}

#[test]
fn errors_classify_for_reason_codes() {
    assert!(ScramError::UnknownUserOrBadProof.is_bad_credentials());
    for e in [
        ScramError::Malformed("x"),
        ScramError::ChannelBindingUnsupported,
        ScramError::MandatoryExtensionUnsupported,
        ScramError::BadServerSignature,
        ScramError::ServerRejected("x".to_owned()),
        ScramError::RandomUnavailable,
    ] {
        assert!(!e.is_bad_credentials(), "{e}");
    }
}

/// A client that has handled the RFC server-first-message, computed once (PBKDF2).
fn rfc_client_after_server_first() -> &'static ScramClient {
    static CLIENT: std::sync::OnceLock<ScramClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let (mut client, _) =
            ScramClient::with_nonce("user", "pencil", RFC_CLIENT_NONCE).expect("client");
        client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .expect("server-first");
        client
    })
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn start_on_any_bytes(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ScramServer::start(&rfc_creds(), &input);
        }

        #[test]
        fn start_on_attribute_soup(input in "[nyp=,a-z0-9]{0,60}") {
            let _ = ScramServer::start(&rfc_creds(), input.as_bytes());
        }

        #[test]
        fn finish_on_any_bytes(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (server, _) = expect_start(&rfc_creds(), RFC_CLIENT_FIRST.as_bytes());
            let _ = server.finish(&input);
        }

        #[test]
        fn finish_on_attribute_soup(input in "[cpr=,a-zA-Z0-9+/]{0,80}") {
            let (server, _) = expect_start(&rfc_creds(), RFC_CLIENT_FIRST.as_bytes());
            let _ = server.finish(input.as_bytes());
        }

        #[test]
        fn client_on_any_server_first(input in proptest::collection::vec(any::<u8>(), 0..120)) {
            let (mut client, _) =
                ScramClient::with_nonce("user", "pencil", RFC_CLIENT_NONCE).expect("client");
            // Any input that parses reaches PBKDF2 with >= 4096 rounds; random bytes almost
            // never parse, so this stays fast.
            let _ = client.handle_server_first(&input);
        }

        #[test]
        fn client_on_any_server_final(input in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = rfc_client_after_server_first().verify_server_final(&input);
        }
    }
}
