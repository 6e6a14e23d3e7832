//! Tests of the redaction choke point: shapes, known secrets, streaming, properties.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;

use super::*;

fn redactor(secrets: &[(&str, &str)]) -> Redactor {
    let mut set = SecretSet::new();
    for (kind, value) in secrets {
        set.add(kind, value);
    }
    Redactor::new(set).expect("redactor builds")
}

fn shapes_only() -> Redactor {
    redactor(&[])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Streams `input` split at the given offsets.
fn stream_split(r: &Redactor, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut stream = r.stream();
    let mut out = Vec::new();
    let mut last = 0;
    for &cut in cuts {
        let cut = cut.clamp(last, input.len());
        out.extend(stream.push(&input[last..cut]));
        last = cut;
    }
    out.extend(stream.push(&input[last..]));
    out.extend(stream.finish());
    out
}

/// Every way of cutting `input` into two and three chunks, plus byte by byte.
fn all_splits(r: &Redactor, input: &[u8]) -> Vec<Vec<u8>> {
    let mut outs = Vec::new();
    for i in 0..=input.len() {
        outs.push(stream_split(r, input, &[i]));
        for j in (i..=input.len()).step_by(7) {
            outs.push(stream_split(r, input, &[i, j]));
        }
    }
    let bytewise: Vec<usize> = (0..input.len()).collect();
    outs.push(stream_split(r, input, &bytewise));
    outs
}

/// Asserts `secret` is gone and `marker` present, whole and streamed at every split.
fn assert_redacted(r: &Redactor, input: &str, secret: &str, marker: &str) {
    let whole = r.redact(input);
    assert!(!whole.contains(secret), "{secret:?} left in {whole:?}");
    assert!(whole.contains(marker), "{marker:?} missing in {whole:?}");
    for out in all_splits(r, input.as_bytes()) {
        assert!(
            !contains(&out, secret.as_bytes()),
            "{secret:?} left in streamed {:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

const ANTHROPIC: &str =
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpQrStUvWxYz0123AA";
const OPENAI: &str = "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv";
const GITHUB: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

#[test]
fn anthropic_key() {
    let line = format!("using key {ANTHROPIC} for the run\n");
    assert_redacted(&shapes_only(), &line, ANTHROPIC, "[REDACTED:anthropic-key]");
    assert_eq!(
        shapes_only().redact(&line),
        "using key [REDACTED:anthropic-key] for the run\n"
    );
}

#[test]
fn openai_keys() {
    let r = shapes_only();
    assert_redacted(&r, &format!("key={OPENAI}\n"), OPENAI, "[REDACTED:");
    let legacy = "sk-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90UvWx";
    assert_redacted(
        &r,
        &format!("got {legacy}!"),
        legacy,
        "[REDACTED:openai-key]",
    );
    // Not a key: the literal inside a word.
    assert_eq!(
        r.redact("task-runner-for-the-whole-workspace ok"),
        "task-runner-for-the-whole-workspace ok"
    );
}

#[test]
fn github_tokens() {
    let r = shapes_only();
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let token = format!("{prefix}{}", &GITHUB[4..]);
        assert_redacted(
            &r,
            &format!("token {token}\n"),
            &token,
            "[REDACTED:github-token]",
        );
    }
    let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW";
    assert_redacted(&r, &format!("({pat})"), pat, "[REDACTED:github-token]");
}

#[test]
fn drydock_api_tokens() {
    let r = shapes_only();
    let token = "ddt_Q2xhdWRlIGNvZGUgd3JvdGUgdGhpcyB0b2tlbiBzYW1wbGU-_x";
    // Found by its shape alone, with no keyword near it.
    assert_redacted(
        &r,
        &format!("printed {token} by mistake\n"),
        token,
        "[REDACTED:drydock-token]",
    );
}

#[test]
fn google_aws_slack_jwt() {
    let r = shapes_only();
    let google = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q";
    assert_redacted(
        &r,
        &format!("maps {google} ok"),
        google,
        "[REDACTED:google-api-key]",
    );
    let aws = "AKIAIOSFODNN7EXAMPLE";
    assert_redacted(
        &r,
        &format!("id {aws}\n"),
        aws,
        "[REDACTED:aws-access-key-id]",
    );
    let slack = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
    assert_redacted(
        &r,
        &format!("slack {slack}\n"),
        slack,
        "[REDACTED:slack-token]",
    );
    let hook = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";
    assert_redacted(
        &r,
        &format!("post {hook}\n"),
        "T00000000/B00000000",
        "[REDACTED:slack-webhook]",
    );
    assert_redacted(
        &r,
        &format!("jwt: {JWT}\n"),
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
        "[REDACTED:",
    );
    assert_redacted(
        &r,
        &format!("cookie={JWT};"),
        "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ",
        "[REDACTED:",
    );
}

#[test]
fn authorization_and_bearer() {
    let r = shapes_only();
    let token = "abc123DEF456ghi789";
    assert_eq!(
        r.redact(&format!("> Authorization: Bearer {token}\n")),
        "> Authorization: Bearer [REDACTED:authorization]\n"
    );
    assert_redacted(
        &r,
        &format!("curl -H 'Authorization: token {token}'"),
        token,
        "[REDACTED:authorization]",
    );
    assert_redacted(
        &r,
        &format!("header bearer {token}"),
        token,
        "[REDACTED:bearer-token]",
    );
    assert_redacted(
        &r,
        &format!("\"authorization\":\"Basic {token}\""),
        token,
        "[REDACTED:authorization]",
    );
}

#[test]
fn url_credentials() {
    let r = shapes_only();
    assert_eq!(
        r.redact("git push https://user:s3cretpass@github.com/o/r.git\n"),
        "git push https://[REDACTED:url-credential]@github.com/o/r.git\n"
    );
    assert_redacted(
        &r,
        "remote: https://x-access-token:ghs_abc@example.com/x",
        "ghs_abc",
        "[REDACTED:url-credential]",
    );
    assert_redacted(
        &r,
        "postgres://app:hunter2@db:5432/app",
        "hunter2",
        "[REDACTED:url-credential]",
    );
    // A plain URL is untouched.
    let plain = "Downloading https://registry.npmjs.org/typescript/-/typescript-5.6.2.tgz\n";
    assert_eq!(r.redact(plain), plain);
}

#[test]
fn assignments_keep_the_name() {
    let r = shapes_only();
    let cases = [
        ("DB_PASSWORD=hunter2\n", "DB_PASSWORD=[REDACTED:secret]\n"),
        (
            "export API_KEY=abcdefgh12345\n",
            "export API_KEY=[REDACTED:secret]\n",
        ),
        ("client_secret: xyz\n", "client_secret: [REDACTED:secret]\n"),
        ("apiKey = 'abcdefgh12345'", "apiKey = '[REDACTED:secret]'"),
        (
            r#"{"name": "x", "api_key": "abcd efgh 1234", "n": 1}"#,
            r#"{"name": "x", "api_key": "[REDACTED:secret]", "n": 1}"#,
        ),
        (
            r#"{"password":"pw"}"#,
            r#"{"password":"[REDACTED:secret]"}"#,
        ),
        (
            r#"{"GITHUB_TOKEN": "abcdefgh12345"}"#,
            r#"{"GITHUB_TOKEN": "[REDACTED:secret]"}"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(r.redact(input), expected, "input {input:?}");
        for out in all_splits(&r, input.as_bytes()) {
            assert_eq!(
                String::from_utf8_lossy(&out),
                expected,
                "streamed {input:?}"
            );
        }
    }
    // Names that merely contain a keyword, and short key values, are left alone.
    for keep in [
        "{\"input_tokens\":1234,\"output_tokens\":56}\n",
        "\"max_tokens\": 4096\n",
        "keyboard: enabled\n",
        "primary_key: id\n",
        "token_type: bearer\n",
        "+    let api_key = std::env::var(\"API_KEY\")?;\n",
        "token = read_token(&path);\n",
    ] {
        assert_eq!(r.redact(keep), keep);
    }
}

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n\
VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n\
LxoJ3T4=\n\
-----END RSA PRIVATE KEY-----\n";

#[test]
fn pem_block_multi_line() {
    let r = shapes_only();
    let input = format!("writing key\n{PEM}done\n");
    let expected = "writing key\n[REDACTED:private-key]\ndone\n";
    assert_eq!(r.redact(&input), expected);
    for out in all_splits(&r, input.as_bytes()) {
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }
    // Truncated block (`head -3 key.pem`): the first ordinary line ends it.
    let cut = "-----BEGIN PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n$ ls -la\n";
    assert_eq!(r.redact(cut), "[REDACTED:private-key]\n$ ls -la\n");
    // A key removed in a diff.
    let diff = format!(
        "diff --git a/key.pem b/key.pem\n{}+new\n",
        PEM.lines().map(|l| format!("-{l}\n")).collect::<String>()
    );
    assert_eq!(
        r.redact(&diff),
        "diff --git a/key.pem b/key.pem\n-[REDACTED:private-key]\n+new\n"
    );
    // Streaming never holds complete lines while inside a block.
    let mut stream = r.stream();
    let out = stream.push(b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n");
    assert_eq!(out, b"[REDACTED:private-key]\n");
    assert_eq!(stream.held(), 0);
}

#[test]
fn pem_block_in_json_line() {
    let r = shapes_only();
    let input = r#"{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n", "client_email": "a@b.iam"}"#;
    let out = r.redact(input);
    assert!(!out.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{out}");
    assert!(out.contains("\"client_email\": \"a@b.iam\""), "{out}");
    assert_redacted(&r, input, "BKcwggSjAgEAAoIBAQC7", "[REDACTED:");
}

#[test]
fn known_secret_and_encodings() {
    let secret = "c0nnect0r-S3cret/with+odd=chars & space";
    let r = redactor(&[("connector-secret", secret)]);
    let b64 = STANDARD.encode(secret);
    let b64url = URL_SAFE.encode(secret);
    let nopad = URL_SAFE_NO_PAD.encode(secret);
    let percent = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    // Inside a larger base64 blob, at each of the three offsets.
    let blobs: Vec<String> = ["", "u:", "us:"]
        .iter()
        .map(|p| STANDARD.encode(format!("{p}{secret}:tail")))
        .collect();
    for form in [secret, &b64, &b64url, &nopad, &percent]
        .into_iter()
        .chain(blobs.iter().map(String::as_str))
    {
        let input = format!("value {form} end\n");
        let out = r.redact(&input);
        assert!(
            out.contains("[REDACTED:connector-secret]"),
            "{form} -> {out}"
        );
        assert!(!out.contains(form), "{form} -> {out}");
    }
}

#[test]
fn secret_at_start_and_end_of_stream() {
    let secret = "Zq9Xw8Vu7Ts6Rp5";
    let r = redactor(&[("api-key", secret)]);
    for input in [
        secret.to_owned(),
        format!("{secret} middle {secret}"),
        format!("line\n{secret}"),
        format!("{secret}\n"),
    ] {
        let expected = input.replace(secret, "[REDACTED:api-key]");
        assert_eq!(r.redact(&input), expected);
        for out in all_splits(&r, input.as_bytes()) {
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
    }
}

#[test]
fn overlapping_secrets() {
    // One secret a prefix of another, one a substring of another.
    let long = "AAAA1111BBBB2222CCCC";
    let prefix = "AAAA1111BB";
    let inner = "1111BBBB22";
    let r = redactor(&[("long", long), ("prefix", prefix), ("inner", inner)]);
    assert_eq!(r.redact(&format!("x {long} y")), "x [REDACTED:long] y");
    assert_eq!(
        r.redact(&format!("x {prefix}ZZ y")),
        "x [REDACTED:prefix]ZZ y"
    );
    assert_eq!(
        r.redact(&format!("x Q{inner}Q y")),
        "x Q[REDACTED:inner]Q y"
    );
    // Two secrets whose occurrences overlap: the tail of one is the head of the other.
    let a = "Head0123Shared99";
    let b = "Shared99Tail4567";
    let r = redactor(&[("a", a), ("b", b)]);
    let input = "<Head0123Shared99Tail4567>";
    let expected = "<[REDACTED:a]>";
    assert_eq!(r.redact(input), expected);
    for out in all_splits(&r, input.as_bytes()) {
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }
    // Two overlapping occurrences of the same secret.
    let s = "abab1234abab";
    let r = redactor(&[("s", s)]);
    assert_eq!(r.redact("[abab1234abab1234abab]"), "[[REDACTED:s]]");
}

#[test]
fn short_and_multi_line_secrets() {
    let mut set = SecretSet::new();
    assert!(!set.add("pin", "1234"));
    assert!(!set.add("empty", "   "));
    assert!(set.add("key file", "first-line-secret\nab\nthird-line-secret\n"));
    assert_eq!(set.len(), 1);
    let reasons: Vec<_> = set
        .skipped()
        .iter()
        .map(|s| (s.kind.as_str(), s.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("pin", SkipReason::TooShort),
            ("empty", SkipReason::TooShort),
            ("key-file", SkipReason::ShortLine)
        ]
    );
    assert!(!format!("{set:?}").contains("first-line"));
    let r = Redactor::new(set).expect("builds");
    assert_eq!(
        r.redact("a first-line-secret b third-line-secret 1234\n"),
        "a [REDACTED:key-file] b [REDACTED:key-file] 1234\n"
    );
}

#[test]
fn markers_are_stable_and_text_passes() {
    let r = redactor(&[("github-token", GITHUB)]);
    let once = r.redact(&format!("A={GITHUB} {ANTHROPIC} password: x\n"));
    assert_eq!(r.redact(&once), once);
    let text =
        "   Compiling serde v1.0.210\nwarning: unused variable: `x`\n  --> src/main.rs:12:5\n";
    assert_eq!(r.redact(text), text);
}

#[test]
fn invalid_utf8_and_multibyte_chunks() {
    let secret = "Zq9Xw8Vu7Ts6Rp5";
    let r = redactor(&[("k", secret)]);
    let mut input = b"\xff\xfe ".to_vec();
    input.extend_from_slice(secret.as_bytes());
    input.extend_from_slice(b" \xc3\n");
    assert_eq!(r.redact_bytes(&input), b"\xff\xfe [REDACTED:k] \xc3\n");
    // Never split a UTF-8 character between outputs.
    let text = "日本語のテキスト".repeat(10);
    let mut stream = r.stream();
    for chunk in text.as_bytes().chunks(5) {
        let out = stream.push(chunk);
        assert!(std::str::from_utf8(&out).is_ok());
    }
}

#[test]
fn long_unterminated_line_is_emitted_as_it_comes() {
    let r = redactor(&[("k", "Zq9Xw8Vu7Ts6Rp5")]);
    let mut stream = r.stream();
    let mut out = Vec::new();
    for _ in 0..1000 {
        out.extend(stream.push(b"progress ... "));
        assert!(stream.held() < r.longest_pattern());
    }
    out.extend(stream.finish());
    assert_eq!(out, b"progress ... ".repeat(1000));
}

#[test]
fn growing_match_is_held_within_bounds() {
    let r = shapes_only();
    let mut stream = r.stream();
    let mut out = stream.push(b"PASSWORD=");
    for _ in 0..100 {
        out.extend(stream.push(&[b'x'; 1024]));
        assert!(stream.held() <= engine::MAX_OPEN_MATCH + 1024 + 16);
    }
    out.extend(stream.push(b" after\n"));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("PASSWORD=[REDACTED:secret]"),
        "{}",
        &text[..40]
    );
    assert!(text.ends_with(" after\n"));
    // A closed shape near the end of an unterminated line, with known secrets making
    // the stream hold back their length: the hold must keep the shape's context.
    let r2 = redactor(&[("k", &"Zq9Xw8Vu7Ts6Rp5".repeat(8))]);
    for trail in 100..200 {
        let input = format!("export DB_PASSWORD=hunter2hunter2 {}", "z".repeat(trail));
        let mut stream = r2.stream();
        let mut out = stream.push(input.as_bytes());
        out.extend(stream.push(b"\n"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(
                "export DB_PASSWORD=[REDACTED:secret] {}\n",
                "z".repeat(trail)
            )
        );
    }
    // A partial literal and an unfinished shape are held, then released by the line end.
    let mut stream = r.stream();
    assert_eq!(stream.push(b"header: Bea"), b"header: ");
    assert_eq!(stream.push(b"rer abc"), b"");
    assert_eq!(
        stream.push(b"defgh12 ok\n"),
        b"Bearer [REDACTED:bearer-token] ok\n"
    );
}

#[test]
fn kind_labels_are_sanitized() {
    let r = redactor(&[
        ("weird kind]\n", "Zq9Xw8Vu7Ts6Rp5"),
        ("", "Yq9Xw8Vu7Ts6Rp5"),
    ]);
    assert_eq!(
        r.redact("Zq9Xw8Vu7Ts6Rp5 Yq9Xw8Vu7Ts6Rp5"),
        "[REDACTED:weird-kind--] [REDACTED:secret]"
    );
}

#[test]
fn large_text_is_redacted_in_blocks_like_a_whole() {
    let secret = "Zq9Xw8Vu7Ts6Rp5";
    let r = redactor(&[("k", secret)]);
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 300_000 {
        i += 1;
        match i % 997 {
            0 => text.push_str(PEM),
            1 => text.push_str(&format!("token={secret} and DB_PASSWORD=x{i}\n")),
            _ => text.push_str(&format!("line {i} of the build output\n")),
        }
    }
    let mut stream = r.stream();
    let mut whole = stream.push(text.as_bytes());
    whole.extend(stream.finish());
    let blocks = r.redact_bytes(text.as_bytes());
    let first_difference = blocks.iter().zip(&whole).position(|(a, b)| a != b);
    if let Some(i) = first_difference {
        let show = |v: &[u8]| {
            String::from_utf8_lossy(&v[i.saturating_sub(80)..(i + 80).min(v.len())]).into_owned()
        };
        panic!(
            "differ at {i}: blocks {:?} whole {:?}",
            show(&blocks),
            show(&whole)
        );
    }
    assert_eq!(blocks.len(), whole.len());
    assert!(!contains(&whole, secret.as_bytes()));
    assert!(!contains(
        &whole,
        b"MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"
    ));
}

#[test]
fn redactor_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Redactor>();
    fn assert_send<T: Send>() {}
    assert_send::<RedactingStream>();
}

/// Lowercase words without `b`, spaces and newlines: no shape can occur in this text
/// (every shape needs a digit, an uppercase letter, `-`, `_`, `:`, `=`, `@` or `.`,
/// except `bearer <8 letters>`, which the missing `b` rules out), and no generated
/// secret can either (each contains a digit).
fn filler() -> impl Strategy<Value = String> {
    "[ac-z \n]{0,80}"
}

/// Secrets with at least one digit so that filler and markers cannot contain them.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/=_.-]{7,40}".prop_flat_map(|s| {
        (Just(s), 0..10u8).prop_map(|(mut s, d)| {
            s.insert(0, char::from(b'0' + d));
            s
        })
    })
}

/// The forms whose presence in the output the properties check.
fn forms(secret: &str) -> Vec<String> {
    let percent = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    vec![
        secret.to_owned(),
        STANDARD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        percent,
    ]
}

/// Text containing a shape, and a part of it that must never reach the output.
const SHAPE_SAMPLES: &[(&str, &str)] = &[
    (ANTHROPIC, "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    (OPENAI, "Ab12Cd34Ef56Gh78Ij90"),
    (GITHUB, "A1b2C3d4E5f6G7h8I9j0"),
    (
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "A1b2C3d4E5f6G7h8I9j0",
    ),
    ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    (
        "xoxb-123456789012-AbCdEfGhIjKl",
        "123456789012-AbCdEfGhIjKl",
    ),
    (JWT, "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV"),
    ("Authorization: Bearer Tok3nValue99", "Tok3nValue99"),
    ("https://user:Pa55word99@host/x", "Pa55word99"),
    ("DB_PASSWORD=Hunter2Hunter2", "Hunter2Hunter2"),
    (r#""api_key": "Va1ue With Space""#, "Va1ue With Space"),
    (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ),
];

/// Escape sequences a terminal shows nothing for (colours, titles, links, modes).
const ESCAPES: &[&str] = &[
    "\x1b[31m",
    "\x1b[0m",
    "\x1b[1;38;5;208m",
    "\x1b]0;title\x07",
    "\x1b]8;;http://x/\x1b\\",
    "\x1b[?25l",
    "\x1b[K",
    "\x1b(B",
];

/// `input` with escape sequences inserted at the given positions.
fn with_escapes(input: &str, escapes: &[(usize, usize)]) -> String {
    let mut at: Vec<(usize, &str)> = escapes
        .iter()
        .map(|&(pos, which)| (pos % (input.len() + 1), ESCAPES[which]))
        .collect();
    at.sort_unstable();
    let mut out = String::with_capacity(input.len() + 16 * at.len());
    let mut last = 0;
    for (pos, escape) in at {
        out.push_str(&input[last..pos]);
        out.push_str(escape);
        last = pos;
    }
    out.push_str(&input[last..]);
    out
}

/// What a terminal shows for each line of `out`.
fn shown(out: &[u8]) -> Vec<u8> {
    out.split(|&b| b == b'\n')
        .map(crate::terminal::render)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

#[test]
fn secrets_behind_escapes_and_rewrites_are_found() {
    let secret = "Zq9Xw8Vu7Ts6Rp5";
    let r = redactor(&[("k", secret)]);
    for input in [
        "K=Zq9X\x1b[01;31m\x1b[Kw8Vu7\x1b[m\x1b[KTs6Rp5\n",
        "Zq9Xw8V\x1b]8;;http://x\x07u7Ts6Rp5 after\n",
        "xxxxxxxu7Ts6Rp5 and a long tail of other text\rZq9Xw8V\n",
        "xxxxxxxu7Ts6Rp5\rZq9X\x1b[1Cyz\rZq9Xw8V\n",
        "Zq9Xw8Vu7Ts6RpQ\x085 typo fixed\n",
        "Zq9Xw8Vu7TsXXXX\x1b[4D6Rp5\n",
    ] {
        let whole = r.redact(input);
        assert!(whole.contains("[REDACTED:k]"), "{input:?} -> {whole:?}");
        for out in std::iter::once(whole.into_bytes()).chain(all_splits(&r, input.as_bytes())) {
            assert!(
                !contains(&shown(&out), secret.as_bytes()) && !contains(&out, secret.as_bytes()),
                "{input:?} -> {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    // Lines with escapes but nothing to redact keep them (colours survive).
    let coloured = "\x1b[32mok\x1b[0m 1 passed\n";
    assert_eq!(r.redact(coloured), coloured);
}

fn chunk_cuts(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stream_never_leaks_secrets(
        secrets in prop::collection::vec(secret(), 1..6),
        parts in prop::collection::vec((filler(), 0..6usize, 0..5usize), 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        escapes in prop::collection::vec((any::<usize>(), 0..ESCAPES.len()), 0..8),
    ) {
        let mut set = SecretSet::new();
        for s in &secrets {
            set.add("test-secret", s);
        }
        let r = Redactor::new(set).expect("builds");
        let mut input = String::new();
        for (text, which, form) in &parts {
            input.push_str(text);
            let f = forms(&secrets[which % secrets.len()]);
            input.push_str(&f[form % f.len()]);
        }
        let input = with_escapes(&input, &escapes);
        let cuts = chunk_cuts(input.len(), &cuts);
        let streamed = stream_split(&r, input.as_bytes(), &cuts);
        let seen = shown(&streamed);
        for s in &secrets {
            for form in forms(s) {
                prop_assert!(!contains(&streamed, form.as_bytes()), "form of {s:?} leaked");
                prop_assert!(
                    !contains(&seen, form.as_bytes()),
                    "form of {s:?} shows in {:?}",
                    String::from_utf8_lossy(&streamed)
                );
            }
        }
        // Streaming gives exactly the whole-text result (on screen, when a line holding
        // escapes was partly emitted before the stream could know).
        let whole = r.redact_bytes(input.as_bytes());
        if escapes.is_empty() {
            prop_assert_eq!(&streamed, &whole);
        } else {
            let whole_seen = shown(&whole);
            prop_assert_eq!(String::from_utf8_lossy(&seen), String::from_utf8_lossy(&whole_seen));
        }
    }

    #[test]
    fn shapes_never_leak_when_streamed(
        secrets in prop::collection::vec(secret(), 0..3),
        parts in prop::collection::vec((filler(), 0..SHAPE_SAMPLES.len(), 0..3u8), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        // Known secrets make the stream hold back more, which moves where it cuts.
        let mut set = SecretSet::new();
        for s in &secrets {
            set.add("test-secret", s);
        }
        let r = Redactor::new(set).expect("builds");
        let mut input = String::new();
        for (text, which, sep) in &parts {
            input.push_str(text);
            input.push(if *sep == 0 { '\n' } else { ' ' });
            input.push_str(SHAPE_SAMPLES[*which].0);
            input.push(' ');
            if *sep == 2 && !secrets.is_empty() {
                input.push_str(&secrets[*which % secrets.len()]);
                input.push(' ');
            }
        }
        let cuts = chunk_cuts(input.len(), &cuts);
        let streamed = stream_split(&r, input.as_bytes(), &cuts);
        for s in &secrets {
            prop_assert!(!contains(&streamed, s.as_bytes()), "known secret leaked");
        }
        for (_, secret) in SHAPE_SAMPLES {
            prop_assert!(
                !contains(&streamed, secret.as_bytes()),
                "{secret:?} leaked from {:?}",
                String::from_utf8_lossy(&streamed)
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_leak(
        secret in secret(),
        parts in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..64), prop::bool::ANY), 1..10),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let r = redactor(&[("k", &secret)]);
        let mut input = Vec::new();
        for (bytes, with_secret) in &parts {
            input.extend_from_slice(bytes);
            if *with_secret {
                input.extend_from_slice(secret.as_bytes());
            }
        }
        let cuts = chunk_cuts(input.len(), &cuts);
        let streamed = stream_split(&r, &input, &cuts);
        prop_assert!(!contains(&streamed, secret.as_bytes()));
        prop_assert!(!contains(&r.redact_bytes(&input), secret.as_bytes()));
    }

    #[test]
    fn text_without_secrets_passes_unchanged(
        secrets in prop::collection::vec(secret(), 0..4),
        text in prop::collection::vec(filler(), 0..10),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut set = SecretSet::new();
        for s in &secrets {
            set.add("test-secret", s);
        }
        let r = Redactor::new(set).expect("builds");
        let input = text.concat();
        let cuts = chunk_cuts(input.len(), &cuts);
        prop_assert_eq!(stream_split(&r, input.as_bytes(), &cuts), input.as_bytes());
        prop_assert_eq!(r.redact(&input), input);
    }

    #[test]
    fn lines_are_never_stalled(
        secrets in prop::collection::vec(secret(), 1..4),
        chunks in prop::collection::vec((filler(), 0..4usize), 1..20),
    ) {
        let mut set = SecretSet::new();
        for s in &secrets {
            set.add("test-secret", s);
        }
        let r = Redactor::new(set).expect("builds");
        let mut stream = r.stream();
        for (text, which) in &chunks {
            let mut chunk = text.clone();
            chunk.push_str(&secrets[which % secrets.len()]);
            stream.push(chunk.as_bytes());
            // Held bytes belong to the unterminated line only, and stay bounded.
            prop_assert!(stream.held() <= 2 * r.longest_pattern() + 64);
            stream.push(b"\n");
            prop_assert_eq!(stream.held(), 0);
        }
    }

    #[test]
    fn multibyte_text_is_never_split(
        text in "[a-zé日\u{1F600} \n]{0,200}",
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let r = redactor(&[("k", "Zq9Xw8Vu7Ts6Rp5")]);
        let cuts = chunk_cuts(text.len(), &cuts);
        let mut stream = r.stream();
        let mut last = 0;
        let mut all = Vec::new();
        for cut in cuts.into_iter().chain([text.len()]) {
            let out = stream.push(&text.as_bytes()[last..cut]);
            prop_assert!(std::str::from_utf8(&out).is_ok());
            all.extend(out);
            last = cut;
        }
        all.extend(stream.finish());
        prop_assert_eq!(all, text.as_bytes());
    }
}
