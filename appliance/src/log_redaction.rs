//! The room secret never reaches the log output, whatever the filter lets
//! through: the log writer itself removes it from every line.
//!
//! Once the identity is loaded, its secret is registered with [`protect`].
//! From then on every formatted log event is searched, as a whole, for the
//! secret in the forms a library's debug or trace output could print it:
//!
//! - as hex text in any case (`88f0…`, `88F0…`), also as part of a longer
//!   run of hex digits: the run is replaced by [`REDACTED`];
//! - as the hex bytes of its text, the way tungstenite prints a frame's
//!   payload (`payload: 0x7b2274797065…`, where `38 38 66 30` is `"88f0"`),
//!   at either alignment: the run is replaced by [`REDACTED`];
//! - escaped (`\u0038`, `\x38`, `%38`) or as a list of byte values in
//!   decimal or hex (`[136, 240, …]`, `[88, f0, …]`, `0x88, 0xf0`): the
//!   whole line is replaced by [`WITHHELD`], as its parts cannot be told apart.
//!
//! A leak is any 16 consecutive characters of the secret's hex text (64
//! bits) or 8 consecutive bytes of the secret itself. A shorter fragment is
//! let through: at most 60 of the 256 bits leave the rest unguessable, and
//! a lower threshold would withhold ordinary trace lines that happen to
//! share a few hex digits with the secret.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::sync::RwLock;

use lookout_provisioning::RoomSecret;
use tracing_subscriber::fmt::MakeWriter;

/// What a run of hex digits holding the secret is replaced by.
pub const REDACTED: &str = "<redacted>";
/// What a whole log line is replaced by when it holds the secret in a form
/// whose extent cannot be marked.
pub const WITHHELD: &str = "<log line withheld: it held the room secret in an encoded form>";

/// Consecutive characters of the hex text that count as a leak.
const HEX_WINDOW: usize = 16;
/// Consecutive bytes of the secret that count as a leak.
const RAW_WINDOW: usize = 8;

/// The secrets the log output must never show.
pub static SECRETS: Redactor = Redactor::new();

/// Registers `secret` with the log writer's [`SECRETS`]: no later log line shows it.
pub fn protect(secret: &RoomSecret) {
    SECRETS.add(secret);
}

/// A set of secrets and the search for them in text.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: RwLock<Vec<Forms>>,
}

/// One secret's windows, ready for lookup.
#[derive(Debug)]
struct Forms {
    /// Every 16-character window of the lowercase hex text.
    hex: HashSet<[u8; HEX_WINDOW]>,
    /// Every 8-byte window of the secret's bytes.
    raw: HashSet<[u8; RAW_WINDOW]>,
}

impl Redactor {
    pub const fn new() -> Redactor {
        Redactor { secrets: RwLock::new(Vec::new()) }
    }

    /// Adds `secret` (adding it twice changes nothing).
    pub fn add(&self, secret: &RoomSecret) {
        let hex_text = secret.expose_hex().into_bytes();
        let mut raw_bytes = [0u8; 32];
        // Cannot fail: `expose_hex` is 64 hex digits.
        if hex::decode_to_slice(&hex_text, &mut raw_bytes).is_err() {
            return;
        }
        let hex = hex_text.windows(HEX_WINDOW).filter_map(|w| w.try_into().ok()).collect();
        let raw = raw_bytes.windows(RAW_WINDOW).filter_map(|w| w.try_into().ok()).collect();
        let forms = Forms { hex, raw };
        // A poisoned lock still holds a usable list.
        let mut secrets = self.secrets.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !secrets.iter().any(|known| known.hex == forms.hex) {
            secrets.push(forms);
        }
    }

    /// `text` with every secret removed (see the module docs).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let secrets = self.secrets.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if secrets.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        for forms in secrets.iter() {
            if let Some(redacted) = forms.redact_hex_runs(&out) {
                out = Cow::Owned(redacted);
            }
        }
        if secrets.iter().any(|forms| forms.leaks_encoded(out.as_bytes())) {
            let line_end = if text.ends_with('\n') { "\n" } else { "" };
            return Cow::Owned(format!("{WITHHELD}{line_end}"));
        }
        out
    }
}

impl Forms {
    /// Whether `bytes` hold 16 characters of the hex text (any case).
    fn holds_hex_text(&self, bytes: &[u8]) -> bool {
        bytes.windows(HEX_WINDOW).any(|w| {
            if !(w[0].is_ascii_hexdigit() && w[HEX_WINDOW - 1].is_ascii_hexdigit()) {
                return false;
            }
            let mut lower = [0u8; HEX_WINDOW];
            for (l, b) in lower.iter_mut().zip(w) {
                *l = b.to_ascii_lowercase();
            }
            self.hex.contains(&lower)
        })
    }

    /// Whether `bytes` hold 8 bytes of the secret itself.
    fn holds_raw(&self, bytes: &[u8]) -> bool {
        bytes.windows(RAW_WINDOW).any(|w| w.try_into().is_ok_and(|w: [u8; RAW_WINDOW]| self.raw.contains(&w)))
    }

    /// Whether a run of hex digits holds the secret as text, or as the hex
    /// of its text or of its bytes, at either alignment.
    fn hex_run_leaks(&self, run: &[u8]) -> bool {
        self.holds_hex_text(run)
            || [0, 1].into_iter().any(|skip| {
                let decoded = decode_hex_pairs(&run[skip.min(run.len())..]);
                self.holds_hex_text(&decoded) || self.holds_raw(&decoded)
            })
    }

    /// The text with each run of hex digits that leaks replaced, or `None`
    /// when there is none.
    fn redact_hex_runs(&self, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let mut out = String::new();
        let mut copied = 0;
        let mut start = 0;
        while start < bytes.len() {
            if !bytes[start].is_ascii_hexdigit() {
                start += 1;
                continue;
            }
            let end =
                bytes[start..].iter().position(|b| !b.is_ascii_hexdigit()).map_or(bytes.len(), |n| start + n);
            if end - start >= HEX_WINDOW && self.hex_run_leaks(&bytes[start..end]) {
                // Hex digits are ASCII, so both ends are character boundaries.
                out.push_str(&text[copied..start]);
                out.push_str(REDACTED);
                copied = end;
            }
            start = end;
        }
        (copied > 0).then(|| {
            out.push_str(&text[copied..]);
            out
        })
    }

    /// Whether the text holds the secret in a form [`Self::redact_hex_runs`]
    /// cannot mark: escaped, or as a list of byte values.
    fn leaks_encoded(&self, text: &[u8]) -> bool {
        let unescaped = unescape(text);
        if self.holds_hex_text(&unescaped) || self.holds_raw(&unescaped) {
            return true;
        }
        let hex_runs_leak = unescaped
            .split(|b| !b.is_ascii_hexdigit())
            .filter(|run| run.len() >= HEX_WINDOW)
            .any(|run| self.hex_run_leaks(run));
        hex_runs_leak || byte_lists(text).iter().any(|list| self.holds_raw(list) || self.holds_hex_text(list))
    }
}

/// Pairs of hex digits as bytes (a trailing odd digit is dropped).
fn decode_hex_pairs(digits: &[u8]) -> Vec<u8> {
    digits.chunks_exact(2).filter_map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?)).collect()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

/// `\uXXXX` (below 256), `\xHH` and `%HH` (also with the backslash
/// escaped once more) replaced by the byte they stand for.
fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if let [b'\\', b'\\', b'x' | b'u', ..] = rest {
            // Escaped twice (the debug form of a text holding escapes).
            i += 1;
            continue;
        }
        let escape = match rest {
            [b'\\', b'u', a, b, c, d, ..] => decode_hex_pairs(&[*a, *b, *c, *d])
                .get(..2)
                .filter(|v| v[0] == 0 && [a, b, c, d].iter().all(|h| h.is_ascii_hexdigit()))
                .map(|v| (v[1], 6)),
            [b'\\', b'x', a, b, ..] | [b'%', a, b, ..] => {
                decode_hex_pairs(&[*a, *b]).first().map(|v| (*v, if rest[0] == b'%' { 3 } else { 4 }))
            }
            _ => None,
        };
        match escape {
            Some((byte, len)) => {
                out.push(byte);
                i += len;
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    out
}

/// Sequences of byte values written as numbers between separators, read
/// both as decimal (`136, 240`) and as hex (`88, f0`, `0x88 0xf0`).
fn byte_lists(text: &[u8]) -> Vec<Vec<u8>> {
    let mut lists = Vec::new();
    let (mut decimal, mut hexadecimal) = (Vec::new(), Vec::new());
    let tokens = text.split(|b| !b.is_ascii_alphanumeric()).filter(|t| !t.is_empty());
    let finish = |list: &mut Vec<u8>, lists: &mut Vec<Vec<u8>>| {
        if list.len() >= RAW_WINDOW {
            lists.push(std::mem::take(list));
        } else {
            list.clear();
        }
    };
    for token in tokens {
        let as_decimal = (token.len() <= 3 && token.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(token).ok()?.parse::<u8>().ok())
            .flatten();
        match as_decimal {
            Some(byte) => decimal.push(byte),
            None => finish(&mut decimal, &mut lists),
        }
        let digits = token.strip_prefix(b"0x").or_else(|| token.strip_prefix(b"x")).unwrap_or(token);
        let as_hex = match digits {
            [d] => hex_value(*d),
            [a, b] => hex_value(*a).zip(hex_value(*b)).map(|(a, b)| a << 4 | b),
            _ => None,
        };
        match as_hex {
            Some(byte) => hexadecimal.push(byte),
            None => finish(&mut hexadecimal, &mut lists),
        }
    }
    finish(&mut decimal, &mut lists);
    finish(&mut hexadecimal, &mut lists);
    lists
}

/// A [`MakeWriter`] whose writers pass each log event through a
/// [`Redactor`] before it reaches `inner`.
pub struct RedactingMakeWriter<M> {
    inner: M,
    redactor: &'static Redactor,
}

impl<M> RedactingMakeWriter<M> {
    pub fn new(inner: M, redactor: &'static Redactor) -> Self {
        RedactingMakeWriter { inner, redactor }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { inner: self.inner.make_writer(), redactor: self.redactor, event: Vec::new() }
    }
}

/// Collects one log event (the formatter makes one writer per event) and
/// writes it, redacted, when dropped.
pub struct RedactingWriter<W: Write> {
    inner: W,
    redactor: &'static Redactor,
    event: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.event.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The event is written whole, on drop: a secret split between two
        // writes must not escape the search.
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        if self.event.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.event);
        let redacted = self.redactor.redact(&text);
        // Nowhere to report a failed write of the log itself.
        let _ = self.inner.write_all(redacted.as_bytes());
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> (&'static Redactor, String) {
        let redactor: &'static Redactor = Box::leak(Box::new(Redactor::new()));
        let secret =
            RoomSecret::from_bytes(std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(0x88)));
        redactor.add(&secret);
        (redactor, secret.expose_hex())
    }

    fn hex_of(text: &str) -> String {
        hex::encode(text)
    }

    #[test]
    fn hex_text_in_any_case_is_redacted_and_the_rest_kept() {
        let (redactor, secret) = redactor();
        let mixed: String = secret
            .chars()
            .enumerate()
            .map(|(i, c)| if i % 3 == 0 { c.to_ascii_uppercase() } else { c })
            .collect();
        for form in [secret.clone(), secret.to_uppercase(), mixed, secret[10..30].to_owned()] {
            let line = format!(r#"TRACE tungstenite::protocol: Received message {{"room_id": "{form}"}}"#);
            let out = redactor.redact(&line);
            assert_eq!(out, r#"TRACE tungstenite::protocol: Received message {"room_id": "<redacted>"}"#);
        }
        let untouched = format!("client {} joined, fingerprint AB:CD", &secret[..15]);
        assert_eq!(redactor.redact(&untouched), untouched, "15 characters are not a leak");
    }

    #[test]
    fn hex_bytes_of_the_text_are_redacted_at_either_alignment() {
        let (redactor, secret) = redactor();
        for text in
            [format!(r#"{{"room_id":"{secret}"}}"#), format!(r#"{{"room_id":"{}"}}"#, secret.to_uppercase())]
        {
            for prefix in ["", "7"] {
                let line = format!("payload: 0x{prefix}{}\n", hex_of(&text));
                assert_eq!(redactor.redact(&line), "payload: 0x<redacted>\n", "{line}");
            }
        }
    }

    #[test]
    fn escaped_forms_and_byte_lists_withhold_the_line() {
        let (redactor, secret) = redactor();
        let raw = hex::decode(&secret).unwrap();
        let ascii = secret.as_bytes();
        let lines = [
            secret.chars().map(|c| format!("\\u{:04x}", c as u32)).collect::<String>(),
            secret.chars().map(|c| format!("\\x{:02x}", c as u32)).collect::<String>(),
            secret.chars().map(|c| format!("%{:02X}", c as u32)).collect::<String>(),
            format!("{raw:?}"),
            format!("{raw:x?}"),
            format!("{raw:#04x?}"),
            format!("b\"{}\"", bytes_debug(&raw)),
            format!("{:?}", bytes_debug(&raw)),
            format!("{:?}", &ascii[8..40]),
            raw.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
        ];
        for line in lines {
            assert_eq!(redactor.redact(&format!("DEBUG x: {line}\n")), format!("{WITHHELD}\n"), "{line}");
        }
    }

    /// How `bytes::Bytes` prints binary data: `b"\x88\xf0..."`.
    fn bytes_debug(raw: &[u8]) -> String {
        raw.iter()
            .map(|b| if b.is_ascii_alphanumeric() { (*b as char).to_string() } else { format!("\\x{b:02x}") })
            .collect()
    }

    #[test]
    fn ordinary_lines_pass_unchanged_and_nothing_is_done_without_a_secret() {
        let (redactor, secret) = redactor();
        let lines = [
            "INFO lookout: serving HTTPS addr=127.0.0.1:8443 certificate_sha256=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01",
            "TRACE webrtc: candidate:1 1 udp 2130706431 192.168.1.20 51234 typ host ufrag abcd1234deadbeef99",
            "DEBUG list [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]",
        ];
        for line in lines {
            assert_eq!(redactor.redact(line), line);
        }
        let empty: &'static Redactor = Box::leak(Box::new(Redactor::new()));
        assert_eq!(empty.redact(&secret), secret);
    }

    #[test]
    fn the_writer_redacts_whole_events_written_in_pieces() {
        let (redactor, secret) = redactor();
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let target = sink.clone();
        let make = RedactingMakeWriter::new(move || SharedSink(target.clone()), redactor);
        {
            let mut writer = make.make_writer();
            writer.write_all(format!("half {}", &secret[..32]).as_bytes()).unwrap();
            writer.flush().unwrap();
            writer.write_all(format!("{} end\n", &secret[32..]).as_bytes()).unwrap();
        }
        assert_eq!(String::from_utf8(sink.lock().unwrap().clone()).unwrap(), "half <redacted> end\n");
    }

    struct SharedSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedSink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
