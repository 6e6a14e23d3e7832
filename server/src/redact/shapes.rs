//! Well-known secret shapes: one combined regex, and the literal prefilter that decides
//! which lines it runs on.
//!
//! Every shape contains one of a small set of literals (`sk-`, `ghp_`, `eyJ`, `://`,
//! `password`, ...). A case-sensitive Aho-Corasick search for those literals runs over
//! the whole text; a cheap check at each hit discards the obviously dead ones (`task-`
//! is not `\bsk-`, `input_tokens"` is not followed by `:` or `=`), and the combined
//! regex then runs only on the lines that still have a live hit. Lines without a hit
//! never reach the regex.
//!
//! All shapes are line-bounded: no character class admits `\n` or `\r`. Keyword
//! literals are matched in three spellings (`key`, `Key`, `KEY`); `kEy=...` is not
//! recognised by design, so prefilter and regex always agree.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{CaptureLocations, Regex};

use super::RedactError;
use super::engine::{Label, Span};

/// One well-known secret shape.
struct ShapeDef {
    /// Kind label in the marker.
    label: &'static str,
    /// Regex; `(?P<V>...)` groups mark the secret part (the whole match otherwise).
    pattern: String,
}

/// Index of the PEM private key shape in [`shape_defs`] (multi-line handling).
pub(crate) const PRIVATE_KEY: usize = 0;

const PW: &str = "(?:password|Password|PASSWORD|passwd|Passwd|PASSWD|passphrase|Passphrase|PASSPHRASE|secret|Secret|SECRET)";
const TK: &str = "(?:token|Token|TOKEN|key|Key|KEY)";

/// The shapes in leftmost-first order: at one position the first shape listed wins
/// (`sk-ant-` before `sk-`).
fn shape_defs() -> Vec<ShapeDef> {
    let quoted = |min: &str| format!(r#""(?P<V>[^"\r\n]{min})"?|'(?P<V>[^'\r\n]{min})'?"#);
    let name = |kw: &str| format!(r#"[A-Za-z0-9_.-]*{kw}["']?[ \t]*[:=][ \t]*"#);
    // Password-like names: any unquoted value.
    let password = format!(r#"{}(?:{}|(?P<V>[^\s"',;]+))"#, name(PW), quoted("+"));
    // Key and token names also name things in code (`let api_key = read_key(path);`):
    // an unquoted value must be 8+ bytes without brackets and end at a delimiter.
    let key = format!(
        r#"{}(?:{}|(?P<V>[^\s"',;(){{}}\[\]<>]{{8,}})(?:[\s"',;]|$))"#,
        name(TK),
        quoted("{8,}")
    );
    vec![
        ShapeDef {
            label: "private-key",
            pattern: r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----[A-Za-z0-9+/=\\ \t:,.-]*".to_owned(),
        },
        ShapeDef {
            label: "anthropic-key",
            pattern: r"\bsk-ant-[A-Za-z0-9_-]{20,}".to_owned(),
        },
        ShapeDef {
            label: "openai-key",
            pattern: r"\bsk-[A-Za-z0-9_-]{20,}".to_owned(),
        },
        ShapeDef {
            label: "github-token",
            pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})".to_owned(),
        },
        ShapeDef {
            label: "drydock-token",
            pattern: r"\bddt_[A-Za-z0-9_-]{40,}".to_owned(),
        },
        ShapeDef {
            label: "google-api-key",
            pattern: r"\bAIza[A-Za-z0-9_-]{30,}".to_owned(),
        },
        ShapeDef {
            label: "aws-access-key-id",
            pattern: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b".to_owned(),
        },
        ShapeDef {
            label: "slack-token",
            pattern: r"\b(?:xox[abeoprs]-[A-Za-z0-9-]{10,}|xapp-[0-9]+-[A-Za-z0-9-]{10,})".to_owned(),
        },
        ShapeDef {
            label: "slack-webhook",
            pattern: r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<V>[A-Za-z0-9/_-]{20,})".to_owned(),
        },
        ShapeDef {
            label: "jwt",
            pattern: r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*".to_owned(),
        },
        ShapeDef {
            label: "url-credential",
            pattern: r#"(?:[A-Za-z][A-Za-z0-9+.-]*)?://(?P<V>[^\s/?#@:"'<>]{1,256}:[^\s/?#@"'<>]{1,256}|[A-Za-z0-9_-]{20,256})@"#.to_owned(),
        },
        ShapeDef {
            label: "authorization",
            pattern: r#"(?:authorization|Authorization|AUTHORIZATION)["']?[ \t]*[:=][ \t]*["']?(?:(?:Basic|basic|BASIC|Bearer|bearer|BEARER|Token|token|TOKEN)[ \t]+)?(?P<V>[^\s"',;]{8,})"#.to_owned(),
        },
        ShapeDef {
            label: "bearer-token",
            pattern: r"\b(?:bearer|Bearer|BEARER)[ \t]+(?P<V>[A-Za-z0-9._~+/=-]{8,})".to_owned(),
        },
        ShapeDef {
            label: "secret",
            pattern: password,
        },
        ShapeDef {
            label: "secret",
            pattern: key,
        },
    ]
}

/// What must hold around a literal hit for a shape to be possible there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HitKind {
    /// A token prefix: the byte before it must not be a word byte (`\b`).
    WordStart,
    /// A key/token/secret/password name: `["']?[ \t]*[:=]` must follow.
    Keyword,
    /// `://`: userinfo followed by `@` must follow.
    Url,
    /// Anything else: only the regex can tell.
    Plain,
}

/// Whether a literal hit can still be (part of) a shape.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HitState {
    Dead,
    Alive,
    /// The line ends (for now) before the check could finish.
    Undecided,
}

/// One prefilter literal.
pub(crate) struct Literal {
    pub(crate) kind: HitKind,
    /// How far past the start of the hit a shape can still begin to match once more
    /// bytes arrive; an unterminated line holds back from an unmatched live hit only
    /// while it is that close to the end.
    pub(crate) reach: usize,
}

/// A literal prefilter hit in a buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) literal: u32,
}

/// The compiled shapes, shared by every redactor.
pub(crate) struct Shapes {
    regex: Regex,
    /// Per shape: capture index of the whole alternative, and of its secret groups.
    groups: Vec<(usize, Vec<usize>)>,
    labels: Vec<&'static str>,
    prefilter: AhoCorasick,
    literals: Vec<Literal>,
    /// Lowercase literal texts, to spot a literal cut in half at the end of a chunk.
    literal_texts: Vec<Vec<u8>>,
}

/// A shape match in a line: the whole match and the span to redact.
pub(crate) struct ShapeMatch {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) span: Span,
    pub(crate) shape: usize,
}

static SHAPES: LazyLock<Result<Shapes, RedactError>> = LazyLock::new(Shapes::build);

/// The process-wide compiled shapes.
pub(crate) fn shapes() -> Result<&'static Shapes, RedactError> {
    SHAPES.as_ref().map_err(Clone::clone)
}

impl Shapes {
    fn build() -> Result<Self, RedactError> {
        let defs = shape_defs();
        let mut alternatives = Vec::new();
        for (i, def) in defs.iter().enumerate() {
            let mut pattern = String::new();
            for (j, piece) in def.pattern.split("(?P<V>").enumerate() {
                if j > 0 {
                    pattern.push_str(&format!("(?P<v{i}_{j}>"));
                }
                pattern.push_str(piece);
            }
            alternatives.push(format!("(?P<s{i}>{pattern})"));
        }
        // ASCII-only classes and word boundaries: faster, and output may be invalid
        // UTF-8.
        let regex = Regex::new(&format!("(?-u){}", alternatives.join("|")))
            .map_err(|e| RedactError::Build(e.to_string()))?;
        let mut groups: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); defs.len()];
        for (index, name) in regex.capture_names().enumerate() {
            let Some(name) = name else { continue };
            let parse = |s: &str| s.parse::<usize>().ok();
            if let Some(i) = name.strip_prefix('s').and_then(parse) {
                if let Some(g) = groups.get_mut(i) {
                    g.0 = index;
                }
            } else if let Some(rest) = name.strip_prefix('v') {
                let i = rest.split('_').next().and_then(parse);
                if let Some(g) = i.and_then(|i| groups.get_mut(i)) {
                    g.1.push(index);
                }
            }
        }

        let mut texts: Vec<(String, HitKind, usize)> = Vec::new();
        let mut word_start =
            |t: &str, reach: usize| texts.push((t.to_owned(), HitKind::WordStart, reach));
        for t in [
            "sk-",
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "ddt_",
            "AIza",
            "AKIA",
            "ASIA",
            "ABIA",
            "ACCA",
            "xox",
            "xapp-",
        ] {
            word_start(t, 128);
        }
        // A JWT only matches once its second dot arrives; its payload can be long.
        word_start("eyJ", 16 * 1024);
        for t in case_variants("bearer") {
            word_start(&t, 128);
        }
        for word in ["password", "passwd", "passphrase", "secret", "token", "key"] {
            for t in case_variants(word) {
                texts.push((t, HitKind::Keyword, 64));
            }
        }
        texts.push(("://".to_owned(), HitKind::Url, 600));
        texts.push(("-----BEGIN".to_owned(), HitKind::Plain, 128));
        texts.push(("hooks.slack.com".to_owned(), HitKind::Plain, 128));
        for t in case_variants("authorization") {
            texts.push((t, HitKind::Plain, 128));
        }
        let prefilter = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(texts.iter().map(|(t, _, _)| t.as_bytes()))
            .map_err(|e| RedactError::Build(e.to_string()))?;
        let literals = texts
            .iter()
            .map(|&(_, kind, reach)| Literal { kind, reach })
            .collect();
        let mut literal_texts: Vec<Vec<u8>> = texts
            .iter()
            .map(|(t, _, _)| t.to_ascii_lowercase().into_bytes())
            .collect();
        literal_texts.sort();
        literal_texts.dedup();
        Ok(Self {
            regex,
            groups,
            labels: defs.iter().map(|d| d.label).collect(),
            prefilter,
            literals,
            literal_texts,
        })
    }

    /// Kind label of shape `i`.
    pub(crate) fn label(&self, i: usize) -> &'static str {
        self.labels.get(i).copied().unwrap_or("secret")
    }

    /// Fresh capture slots for [`Shapes::scan_line`].
    pub(crate) fn capture_locations(&self) -> CaptureLocations {
        self.regex.capture_locations()
    }

    /// Appends every prefilter literal hit in `buf`.
    pub(crate) fn find_hits(&self, buf: &[u8], hits: &mut Vec<Hit>) {
        for m in self.prefilter.find_iter(buf) {
            hits.push(Hit {
                start: m.start(),
                end: m.end(),
                literal: m.pattern().as_u32(),
            });
        }
    }

    /// The literal of a hit.
    pub(crate) fn literal(&self, hit: &Hit) -> Option<&Literal> {
        self.literals.get(hit.literal as usize)
    }

    /// Length of the longest suffix of `tail` that is a proper prefix of a literal
    /// (ignoring ASCII case): those bytes may become a hit with the next chunk.
    pub(crate) fn partial_literal_len(&self, tail: &[u8]) -> usize {
        let mut best = 0;
        for text in &self.literal_texts {
            let longest = (text.len() - 1).min(tail.len());
            for k in (best + 1..=longest).rev() {
                if tail[tail.len() - k..].eq_ignore_ascii_case(&text[..k]) {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    /// Whether a hit in the line `buf[line_start..line_end]` may still be a shape.
    /// `complete` says the line has ended; otherwise more bytes may follow `line_end`.
    pub(crate) fn hit_state(
        &self,
        buf: &[u8],
        line_start: usize,
        line_end: usize,
        hit: &Hit,
        complete: bool,
    ) -> HitState {
        let Some(literal) = self.literal(hit) else {
            return HitState::Alive;
        };
        let out_of_line = if complete {
            HitState::Dead
        } else {
            HitState::Undecided
        };
        let line = &buf[..line_end];
        match literal.kind {
            HitKind::Plain => HitState::Alive,
            HitKind::WordStart => {
                let before = hit.start.checked_sub(1).filter(|&i| i >= line_start);
                match before.map(|i| line[i]) {
                    Some(b) if b.is_ascii_alphanumeric() || b == b'_' => HitState::Dead,
                    _ => HitState::Alive,
                }
            }
            HitKind::Keyword => {
                let mut i = hit.end;
                if matches!(line.get(i), Some(b'"' | b'\'')) {
                    i += 1;
                }
                while matches!(line.get(i), Some(b' ' | b'\t')) {
                    i += 1;
                }
                match line.get(i) {
                    None => out_of_line,
                    Some(b':' | b'=') => HitState::Alive,
                    Some(_) => HitState::Dead,
                }
            }
            HitKind::Url => {
                // Userinfo is at most 256 + 1 + 256 bytes in the regex.
                let scan = line.get(hit.end..).unwrap_or_default();
                for &b in scan.iter().take(514) {
                    match b {
                        b'@' => return HitState::Alive,
                        b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' => return HitState::Dead,
                        b if b.is_ascii_whitespace() => return HitState::Dead,
                        _ => {}
                    }
                }
                if line.len() >= hit.end + 514 {
                    HitState::Dead
                } else {
                    out_of_line
                }
            }
        }
    }

    /// Runs the combined regex over `buf[line_start..line_end]` and calls `found` for
    /// each match (offsets relative to `buf`).
    pub(crate) fn scan_line(
        &self,
        buf: &[u8],
        line_start: usize,
        line_end: usize,
        locs: &mut CaptureLocations,
        mut found: impl FnMut(ShapeMatch),
    ) {
        let line = &buf[line_start..line_end];
        let mut at = 0;
        while at <= line.len() {
            let Some(m) = self.regex.captures_read_at(locs, line, at) else {
                break;
            };
            let (start, end) = (m.start(), m.end());
            let shape = self
                .groups
                .iter()
                .position(|(whole, _)| locs.get(*whole).is_some())
                .unwrap_or(0);
            let secret = self
                .groups
                .get(shape)
                .and_then(|(_, parts)| parts.iter().find_map(|&g| locs.get(g)))
                .unwrap_or((start, end));
            found(ShapeMatch {
                start: line_start + start,
                end: line_start + end,
                span: Span {
                    start: line_start + secret.0,
                    end: line_start + secret.1,
                    anchor: line_start + start,
                    label: Label::Shape(u16::try_from(shape).unwrap_or(0)),
                },
                shape,
            });
            // Every shape matches at least one byte.
            at = end.max(start + 1);
        }
    }
}

/// `word`, `Word`, `WORD`.
fn case_variants(word: &str) -> [String; 3] {
    let mut capitalized = word.to_owned();
    if let Some(first) = capitalized.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    [word.to_owned(), capitalized, word.to_ascii_uppercase()]
}
