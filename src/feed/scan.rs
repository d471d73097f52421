//! One pass over a frame: where each event is and what type it is, without deserialising
//! anything.
//!
//! Some fifty book events arrive for every trade. Reading a frame used to mean a serde walk
//! for its trades and a second one for its book events; now [`scan`] walks it once, checking
//! that it is JSON of the expected shape (an object, or an array of objects) and noting each
//! event's byte range and `event_type`. Only the events a reader wants are then deserialised,
//! each from its own range: trades by the trade parser, book events by the book side (when it
//! is on), announcements by the follower. With the book side off, a book event costs this
//! scan and nothing more.
//!
//! The scan checks the JSON grammar (strings and their escapes, numbers, literals, nesting)
//! so that a malformed frame is still refused whole and counted, as when serde read it all.
//! It never recurses: nesting deeper than [`MAX_DEPTH`] is refused rather than followed.

use super::event::MalformedFrame;

/// Deepest nesting of arrays and objects a frame may have (the feed's deepest is four;
/// serde_json's own limit is 128).
const MAX_DEPTH: usize = 128;

/// What an event is, by its `event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `last_trade_price`.
    Trade,
    /// `book`, or an object without `event_type` that has `bids` (some snapshots come so).
    Book,
    /// `price_change`.
    PriceChange,
    /// `tick_size_change`.
    TickSize,
    /// `best_bid_ask` (known; nothing is read from it).
    BestBidAsk,
    /// `new_market`.
    NewMarket,
    /// `market_resolved`.
    Resolved,
    /// Any other type, or none: skipped and counted (the live feed adds types over time).
    Unknown,
}

impl Kind {
    pub(crate) fn of(event_type: Option<&str>, has_bids: bool) -> Kind {
        match event_type {
            Some("last_trade_price") => Kind::Trade,
            Some("book") => Kind::Book,
            Some("price_change") => Kind::PriceChange,
            Some("tick_size_change") => Kind::TickSize,
            Some("best_bid_ask") => Kind::BestBidAsk,
            Some("new_market") => Kind::NewMarket,
            Some("market_resolved") => Kind::Resolved,
            Some(_) => Kind::Unknown,
            None if has_bids => Kind::Book,
            None => Kind::Unknown,
        }
    }

    /// Whether the book side reads it.
    pub(crate) fn is_book(self) -> bool {
        matches!(self, Kind::Book | Kind::PriceChange | Kind::TickSize)
    }
}

/// One event of a frame: its type and its byte range (a whole JSON object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) kind: Kind,
    start: usize,
    end: usize,
}

impl Span {
    /// The event's text in `frame` (the frame it was scanned from).
    pub(crate) fn text(self, frame: &str) -> &str {
        frame.get(self.start..self.end).unwrap_or("")
    }

    /// Where the event starts in its frame.
    pub(crate) fn start(self) -> usize {
        self.start
    }
}

/// Scans `frame` into `events` (cleared first). A frame that is not an object or an array of
/// objects, or not JSON, is an error and leaves `events` empty.
pub(crate) fn scan(frame: &str, events: &mut Vec<Span>) -> Result<(), MalformedFrame> {
    scan_reading(frame, events, &mut |_| None)
}

/// [`scan`], with a reader that may take each event instead of the scan: `read(at)` reads
/// the object starting at byte `at` and returns its end and type, with the grammar checked as
/// the scan checks it, or `None` to leave it to the scan. (The book side reads its events as
/// the pass goes, rather than walking each twice.)
pub(crate) fn scan_reading(
    frame: &str,
    events: &mut Vec<Span>,
    read: &mut impl FnMut(usize) -> Option<(usize, Kind)>,
) -> Result<(), MalformedFrame> {
    events.clear();
    let result = Scanner {
        b: frame.as_bytes(),
        frame,
    }
    .frame(events, read);
    if result.is_err() {
        events.clear();
    }
    result.map_err(|e| MalformedFrame::new(e.describe(frame)))
}

/// With the book side off: whether `frame` can be passed over without its scan, every event
/// in it being one the book side alone reads. The live feed sends some fifty book events for
/// every trade; with nobody to read them, their grammar is not checked (a malformed frame of
/// book events alone is not counted as malformed then) and the frame only counts as a frame.
///
/// Conservative by construction: `true` only when the frame has no backslash (so every key
/// and type is spelled as it reads) and every `"event_type"` in it is followed, with no
/// space, by `:"` and a book type. A trade, an announcement or an event of a type not known
/// must name its type there, so a frame holding one is always scanned; so is a frame without
/// any `"event_type"`, and anything spaced or escaped. The searches are `memchr`'s (vector
/// instructions), some ten times the scan's speed.
pub(crate) fn book_events_only(frame: &str) -> bool {
    const KEY: &[u8] = b"\"event_type\"";
    let b = frame.as_bytes();
    if memchr::memchr(b'\\', b).is_some() {
        return false;
    }
    let mut any = false;
    for at in memchr::memmem::find_iter(b, KEY) {
        let Some(value) = b[at + KEY.len()..].strip_prefix(b":\"") else {
            return false;
        };
        let Some(end) = memchr::memchr(b'"', value) else {
            return false;
        };
        if !matches!(
            &value[..end],
            b"book" | b"price_change" | b"tick_size_change" | b"best_bid_ask"
        ) {
            return false;
        }
        any = true;
    }
    any
}

/// Where and why a scan stopped.
struct Stop {
    at: usize,
    what: &'static str,
}

impl Stop {
    fn describe(&self, frame: &str) -> String {
        if self.at == 0 {
            return format!("not JSON: {:?}", super::event::preview(frame));
        }
        format!("{} at byte {}", self.what, self.at)
    }
}

type Step<T> = Result<T, Stop>;

fn stop<T>(at: usize, what: &'static str) -> Step<T> {
    Err(Stop { at, what })
}

struct Scanner<'a> {
    b: &'a [u8],
    frame: &'a str,
}

impl Scanner<'_> {
    fn frame(
        &self,
        events: &mut Vec<Span>,
        read: &mut impl FnMut(usize) -> Option<(usize, Kind)>,
    ) -> Step<()> {
        let mut event = |i: usize, events: &mut Vec<Span>| match read(i) {
            Some((end, kind)) => {
                events.push(Span {
                    kind,
                    start: i,
                    end,
                });
                Ok(end)
            }
            None => self.event(i, events),
        };
        let mut i = self.ws(0);
        match self.b.get(i) {
            Some(b'{') => i = event(i, events)?,
            Some(b'[') => {
                i = self.ws(i + 1);
                if self.b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    loop {
                        if self.b.get(i) != Some(&b'{') {
                            return stop(i.max(1), "an array element that is not an object");
                        }
                        i = self.ws(event(i, events)?);
                        match self.b.get(i) {
                            Some(b',') => i = self.ws(i + 1),
                            Some(b']') => {
                                i += 1;
                                break;
                            }
                            _ => return stop(i, "expected , or ]"),
                        }
                    }
                }
            }
            _ => return stop(0, "not JSON"),
        }
        let end = self.ws(i);
        if end != self.b.len() {
            return stop(end, "trailing characters");
        }
        Ok(())
    }

    /// One event object starting at `start` (a `{`): its end, its span pushed.
    fn event(&self, start: usize, events: &mut Vec<Span>) -> Step<usize> {
        let mut i = self.ws(start + 1);
        let mut event_type: Option<std::borrow::Cow<'_, str>> = None;
        let mut has_bids = false;
        if self.b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let (key_end, escaped) = self.string(i)?;
                let key = if escaped {
                    self.key(i, key_end, true)
                } else {
                    // Compared as bytes: no string is made for the keys we skip.
                    match &self.b[i + 1..key_end - 1] {
                        b"event_type" => std::borrow::Cow::Borrowed("event_type"),
                        b"bids" => std::borrow::Cow::Borrowed("bids"),
                        _ => std::borrow::Cow::Borrowed(""),
                    }
                };
                i = self.ws(key_end);
                if self.b.get(i) != Some(&b':') {
                    return stop(i, "expected :");
                }
                let value_start = self.ws(i + 1);
                let value_end = self.value(value_start, 2)?;
                match &*key {
                    "event_type"
                        if event_type.is_none() && self.b.get(value_start) == Some(&b'"') =>
                    {
                        let escaped = self.b[value_start + 1..value_end - 1].contains(&b'\\');
                        event_type = Some(self.key(value_start, value_end, escaped));
                    }
                    "bids" => has_bids = true,
                    _ => {}
                }
                i = self.ws(value_end);
                match self.b.get(i) {
                    Some(b',') => i = self.ws(i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return stop(i, "expected , or }"),
                }
            }
        }
        events.push(Span {
            kind: Kind::of(event_type.as_deref(), has_bids),
            start,
            end: i,
        });
        Ok(i)
    }

    /// A string's content from its quoted range `[start, end)`; escapes decoded (rare: only
    /// then does this allocate).
    fn key(&self, start: usize, end: usize, escaped: bool) -> std::borrow::Cow<'_, str> {
        let quoted = &self.frame[start..end];
        if !escaped {
            return std::borrow::Cow::Borrowed(&quoted[1..quoted.len() - 1]);
        }
        // The scan has checked its escapes; a lone surrogate is what serde may still refuse,
        // and no event type or field name we read has one.
        serde_json::from_str::<String>(quoted)
            .map(std::borrow::Cow::Owned)
            .unwrap_or(std::borrow::Cow::Borrowed(""))
    }

    fn ws(&self, mut i: usize) -> usize {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(i) {
            i += 1;
        }
        i
    }

    /// The string starting at `start` (a `"`): the index after its closing quote, and whether
    /// it has escapes.
    fn string(&self, start: usize) -> Step<(usize, bool)> {
        if self.b.get(start) != Some(&b'"') {
            return stop(start, "expected a string");
        }
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            let n = match string_end(&self.b[i..]) {
                Some(n) if self.b[i + n] < 0x20 => {
                    return stop(i + n, "a control character in a string");
                }
                Some(n) => n,
                None => return stop(self.b.len(), "unterminated string"),
            };
            i += n;
            if self.b[i] == b'"' {
                return Ok((i + 1, escaped));
            }
            escaped = true;
            match self.b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let hex = self.b.get(i + 2..i + 6);
                    if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                        return stop(i, "a bad \\u escape");
                    }
                    i += 6;
                }
                _ => return stop(i, "a bad escape"),
            }
        }
    }

    /// Skips the value at `start`, which sits at nesting `depth`: the index after it.
    fn value(&self, start: usize, depth: usize) -> Step<usize> {
        // Open containers above `depth`, innermost in bit `n - 1`: set for an object.
        // Iterative, bounded by MAX_DEPTH (128 bits).
        let mut open = 0u128;
        let mut n = 0usize;
        let mut i = start;
        loop {
            // A value at `i`.
            match self.b.get(i) {
                Some(b'"') => i = self.string(i)?.0,
                Some(&c @ (b'{' | b'[')) => {
                    if depth + n >= MAX_DEPTH {
                        return stop(i, "nested too deep");
                    }
                    let object = c == b'{';
                    open = (open & !(1u128 << n)) | (u128::from(object) << n);
                    n += 1;
                    i = self.ws(i + 1);
                    let close = if object { b'}' } else { b']' };
                    if self.b.get(i) == Some(&close) {
                        n -= 1;
                        i += 1;
                    } else {
                        if object {
                            i = self.member_key(i)?;
                        }
                        continue;
                    }
                }
                Some(b't') => i = self.literal(i, b"true")?,
                Some(b'f') => i = self.literal(i, b"false")?,
                Some(b'n') => i = self.literal(i, b"null")?,
                Some(b'-' | b'0'..=b'9') => i = self.number(i)?,
                _ => return stop(i, "expected a value"),
            }
            // After a value: close what ends here, or go on to the next element.
            loop {
                if n == 0 {
                    return Ok(i);
                }
                i = self.ws(i);
                let object = open & (1u128 << (n - 1)) != 0;
                match self.b.get(i) {
                    Some(b',') => {
                        i = self.ws(i + 1);
                        if object {
                            i = self.member_key(i)?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        n -= 1;
                        i += 1;
                    }
                    Some(b']') if !object => {
                        n -= 1;
                        i += 1;
                    }
                    _ => return stop(i, "expected , or a closing bracket"),
                }
            }
        }
    }

    /// An object member's key and colon at `i`: the index of its value.
    fn member_key(&self, i: usize) -> Step<usize> {
        let i = self.ws(self.string(i)?.0);
        if self.b.get(i) != Some(&b':') {
            return stop(i, "expected :");
        }
        Ok(self.ws(i + 1))
    }

    fn literal(&self, i: usize, word: &[u8]) -> Step<usize> {
        if self.b.get(i..i + word.len()) == Some(word) {
            Ok(i + word.len())
        } else {
            stop(i, "a bad literal")
        }
    }

    /// A JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&self, mut i: usize) -> Step<usize> {
        let digits = |mut i: usize| {
            let from = i;
            while self.b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            (i, i - from)
        };
        let start = i;
        if self.b.get(i) == Some(&b'-') {
            i += 1;
        }
        match self.b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i).0,
            _ => return stop(start, "a bad number"),
        }
        if self.b.get(i) == Some(&b'.') {
            let (j, n) = digits(i + 1);
            if n == 0 {
                return stop(start, "a bad number");
            }
            i = j;
        }
        if let Some(b'e' | b'E') = self.b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = self.b.get(i) {
                i += 1;
            }
            let (j, n) = digits(i);
            if n == 0 {
                return stop(start, "a bad number");
            }
            i = j;
        }
        Ok(i)
    }
}

/// A pull reader over one event a scan has found (so already JSON), for the book side's
/// reading of its common events without serde: keys and strings come out borrowed, values
/// not asked for are skipped. Every method returns `None` where the reader would need more
/// than it has (an escaped key or string, a shape it was not told to expect): the caller then
/// reads the event with serde instead, which decides.
pub(crate) struct Cursor<'a> {
    sc: Scanner<'a>,
    i: usize,
    /// At the first member or element of the container just begun.
    first: bool,
    /// Containers entered and not left (what a skipped value's nesting counts from, as in
    /// the scan).
    depth: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at byte `at` of `frame` (an event inside a frame).
    pub(crate) fn at(frame: &'a str, at: usize) -> Cursor<'a> {
        let sc = Scanner {
            b: frame.as_bytes(),
            frame,
        };
        let i = sc.ws(at);
        Cursor {
            sc,
            i,
            first: true,
            depth: 0,
        }
    }

    /// The byte the cursor is at.
    pub(crate) fn position(&self) -> usize {
        self.i
    }

    /// The next value's first byte.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.sc.b.get(self.i).copied()
    }

    fn enter(&mut self, open: u8) -> Option<()> {
        (self.peek()? == open).then_some(())?;
        // A container the scan would find at depth `depth + 1`: refused as deep as it is.
        (self.depth + 1 < MAX_DEPTH).then_some(())?;
        self.i = self.sc.ws(self.i + 1);
        self.first = true;
        self.depth += 1;
        Some(())
    }

    /// Whether the container goes on (after its separator), or ends here (consumed).
    fn more(&mut self, close: u8) -> Option<bool> {
        self.i = self.sc.ws(self.i);
        let c = self.peek()?;
        if c == close {
            self.i += 1;
            // Back in the container around it, which has had a member already.
            self.first = false;
            self.depth = self.depth.saturating_sub(1);
            return Some(false);
        }
        if !self.first {
            (c == b',').then_some(())?;
            self.i = self.sc.ws(self.i + 1);
        }
        self.first = false;
        Some(true)
    }

    /// Enters the object at the cursor.
    pub(crate) fn begin_object(&mut self) -> Option<()> {
        self.enter(b'{')
    }

    /// Enters the array at the cursor.
    pub(crate) fn begin_array(&mut self) -> Option<()> {
        self.enter(b'[')
    }

    /// The next key of the object being read (the cursor then at its value), or `Some(None)`
    /// at its end.
    pub(crate) fn next_key(&mut self) -> Option<Option<&'a [u8]>> {
        if !self.more(b'}')? {
            return Some(None);
        }
        let key = self.string()?;
        self.i = self.sc.ws(self.i);
        (self.peek()? == b':').then_some(())?;
        self.i = self.sc.ws(self.i + 1);
        Some(Some(key.as_bytes()))
    }

    /// Whether the array being read has another element (the cursor then at it).
    pub(crate) fn next_element(&mut self) -> Option<bool> {
        self.more(b']')
    }

    /// The string at the cursor, without its quotes; `None` if it has escapes.
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        let start = self.i;
        let (end, escaped) = self.sc.string(start).ok()?;
        self.i = end;
        if escaped {
            return None;
        }
        self.sc.frame.get(start + 1..end - 1)
    }

    /// Skips the value at the cursor.
    pub(crate) fn skip(&mut self) -> Option<()> {
        // A member of an event sits at depth 2 for the scan (whether the frame is an array
        // or the event alone): counted the same way here.
        self.i = self.sc.value(self.i, self.depth + 1).ok()?;
        self.first = false;
        Some(())
    }
}

/// The index of the first `"`, `\\` or control character in `s` (what ends a string's plain
/// run), eight bytes at a time: strings are most of a frame's bytes. (Mycroft's zero-byte
/// test, as serde_json does; memchr cannot look for a range.)
fn string_end(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGHS: u64 = ONES << 7;
    // A byte is flagged when it is below 0x21 once bit 1 is flipped (a control character,
    // or `"`: 0x22 becomes 0x20), or when it is `\\`: two zero-byte tests, not three.
    let flags = |w: u64| {
        let q = w ^ (ONES * 0x02);
        let backslash = w ^ (ONES * u64::from(b'\\'));
        ((q.wrapping_sub(ONES * 0x21) & !q) | (backslash.wrapping_sub(ONES) & !backslash)) & HIGHS
    };
    let word = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        u64::from_le_bytes(word)
    };
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let flagged = flags(word(chunk));
        if flagged != 0 {
            // The lowest flagged byte is a true one: a false flag comes only from a borrow
            // out of a true one below it.
            return Some(at + flagged.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| is_string_end(c))
        .map(|k| at + k)
}

fn is_string_end(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A frame for the property tests: one to four of `parts` (fastrand's current seed), as
    /// an object alone or an array, and one time in `cut_one_in` a byte cut out or doubled
    /// (mostly no longer JSON).
    pub(crate) fn random_frame(parts: &[&str], cut_one_in: u8) -> String {
        let n = fastrand::usize(1..5);
        let picked: Vec<&str> = (0..n)
            .map(|_| parts[fastrand::usize(0..parts.len())])
            .collect();
        let mut frame = if n == 1 && fastrand::bool() {
            picked[0].to_owned()
        } else {
            format!("[{}]", picked.join(","))
        };
        if fastrand::u8(0..cut_one_in) == 0 && !frame.is_empty() {
            let at = fastrand::usize(0..frame.len());
            if frame.is_char_boundary(at) && frame.is_char_boundary(at + 1) {
                let c = frame.as_bytes()[at] as char;
                if fastrand::bool() {
                    frame.remove(at);
                } else {
                    frame.insert(at, c);
                }
            }
        }
        frame
    }

    #[test]
    fn a_strings_end_is_found_eight_bytes_at_a_time_as_one_at_a_time() {
        // Bytes around every boundary the word tests have (control characters, the space,
        // the quote and its neighbours, the backslash, high bytes), at every offset.
        let bytes = [
            0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2, 0xdc,
            0xff, b'a', b'0',
        ];
        fastrand::seed(11);
        for _ in 0..100_000 {
            let len = fastrand::usize(0..40);
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    if fastrand::u8(0..4) == 0 {
                        bytes[fastrand::usize(0..bytes.len())]
                    } else {
                        b'x'
                    }
                })
                .collect();
            assert_eq!(
                string_end(&s),
                s.iter().position(|&c| is_string_end(c)),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_frame_of_book_events_alone_is_passed_over_and_nothing_else() {
        for only_books in [
            r#"{"event_type":"price_change","market":"0x1","price_changes":[{"asset_id":"1","price":"0.5","size":"1","side":"BUY"}]}"#,
            r#"[{"event_type":"book","asset_id":"1","bids":[],"asks":[]},{"event_type":"book","asset_id":"2","bids":[],"asks":[]}]"#,
            r#"{"event_type":"tick_size_change","old_tick_size":"0.01"}"#,
            r#"{"event_type":"best_bid_ask","best_bid":"0.4"}"#,
        ] {
            assert!(book_events_only(only_books), "{only_books}");
        }
        for scanned in [
            r#"{"event_type":"last_trade_price","price":"0.5"}"#,
            r#"[{"event_type":"book","bids":[]},{"event_type":"last_trade_price"}]"#,
            r#"{"event_type":"book","event_type":"last_trade_price"}"#,
            r#"{"event_type" :"book"}"#,
            r#"{"event_type": "book"}"#,
            r#"{"event_type":"book","note":"a\"b"}"#,
            r#"{"event_type":"boo\u006b"}"#,
            r#"{"asset_id":"1","bids":[]}"#,
            r#"{"event_type":"new_market"}"#,
            r#"{"event_type":"market_resolved"}"#,
            r#"{"event_type":"brand_new"}"#,
            r#"{"event_type":"bookx"}"#,
            r#"{"event_type":"book"#,
            r#"{"a":"event_type"}"#,
            "PONG",
            "",
        ] {
            assert!(!book_events_only(scanned), "{scanned}");
        }
    }

    #[test]
    fn a_frame_passed_over_never_holds_what_a_reader_wants() {
        // Frames of every kind of event, spelled every way the grammar allows; whenever
        // one is passed over, the scan (the rule, read independently) finds only events
        // the book side alone reads, or events with no type at all, in it.
        let parts = [
            r#"{"event_type":"last_trade_price","price":"0.5"}"#,
            r#"{"event_type" :"last_trade_price"}"#,
            r#"{"event_type":"last_\u0074rade_price"}"#,
            r#"{"x":{"event_type":"book"},"event_type":"last_trade_price"}"#,
            r#"{"event_type":"book","event_type":"last_trade_price"}"#,
            r#"{"event_type":"new_market","slug":"x"}"#,
            r#"{"event_type":"market_resolved"}"#,
            r#"{"event_type":"brand_new"}"#,
            r#"{"event_type":"booky"}"#,
            r#"{"event_type":7}"#,
            r#"{"asset_id":"1","bids":[]}"#,
            r#"{"note":"\"event_type\":\"book\""}"#,
            r#"{"note":"event_type","event_type":"book"}"#,
            r#"{"event_type":"book","bids":[{"price":"0.5","size":"1"}],"asks":[]}"#,
            r#"{"event_type":"price_change","price_changes":[]}"#,
            r#"{"event_type":"tick_size_change"}"#,
            r#"{"event_type":"best_bid_ask"}"#,
            "{}",
        ];
        fastrand::seed(5);
        let mut passed = 0;
        for _ in 0..200_000 {
            // Now and then a byte cut out or doubled: frames that are not JSON.
            let frame = random_frame(&parts, 8);
            if !book_events_only(&frame) {
                continue;
            }
            passed += 1;
            let Ok(events) = kinds(&frame) else {
                continue; // not JSON: nobody reads a frame of book events then
            };
            for (kind, text) in events {
                let untyped = || {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .is_ok_and(|v| v.get("event_type").is_none())
                };
                assert!(
                    kind.is_book()
                        || kind == Kind::BestBidAsk
                        || (kind == Kind::Unknown && untyped()),
                    "{frame} was passed over, yet holds {kind:?}: {text}"
                );
            }
        }
        assert!(passed > 1_000, "only {passed} frames passed over");
    }

    fn kinds(frame: &str) -> Result<Vec<(Kind, String)>, String> {
        let mut events = Vec::new();
        scan(frame, &mut events).map_err(|e| e.to_string())?;
        Ok(events
            .iter()
            .map(|s| (s.kind, s.text(frame).to_owned()))
            .collect())
    }

    #[test]
    fn events_are_found_with_their_types_and_ranges() {
        let frame = r#" [ {"event_type":"book","bids":[{"price":"0.5","size":"1"}],"asks":[]},
            {"asset_id":"1","bids":[]}, {"event_type" : "last_trade_price","price":"0.5"},
            {"event_type":"price_change","price_changes":[{"a":[1,2.5e-3,true,null,{}]}]},
            {"event_type":"tick_size_change"},{"event_type":"best_bid_ask"},
            {"event_type":"new_market"},{"event_type":"market_resolved"},
            {"event_type":"brand_new"},{},{"event_type":7},{"event_type":"last_\u0074rade_price"} ] "#;
        let got = kinds(frame).expect("scans");
        let k: Vec<Kind> = got.iter().map(|(k, _)| *k).collect();
        use Kind::*;
        assert_eq!(
            k,
            vec![
                Book,
                Book,
                Trade,
                PriceChange,
                TickSize,
                BestBidAsk,
                NewMarket,
                Resolved,
                Unknown,
                Unknown,
                Unknown,
                Trade
            ]
        );
        assert_eq!(got[1].1, r#"{"asset_id":"1","bids":[]}"#);
        assert_eq!(got[9].1, "{}");
        assert_eq!(kinds("[]"), Ok(vec![]));
        assert_eq!(
            kinds(r#"{"event_type":"book"}"#),
            Ok(vec![(Kind::Book, r#"{"event_type":"book"}"#.into())])
        );
    }

    #[test]
    fn whatever_serde_refuses_the_scan_refuses() {
        for bad in [
            "",
            "PONG",
            "{",
            "[",
            "[{},]",
            "[{}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":tru}",
            "{\"a\":\"x\ty\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12G4\"}",
            "{\"a\":\"abc}",
            "{\"a\":[1 2]}",
            "{\"a\":{\"b\"}}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{} {}",
            "[{}]x",
            "{\"event_type\":",
            "nul\u{0}l",
        ] {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(),
                "{bad:?}: serde accepts it"
            );
            assert!(kinds(bad).is_err(), "{bad:?} must be refused");
        }
        // JSON, but not a frame: a frame is an object or an array of objects.
        for shape in ["[1,2]", "[{},1]", "[[]]", "\"x\"", "7", "null"] {
            assert!(kinds(shape).is_err(), "{shape:?} must be refused");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(kinds(&deep).is_err());
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(kinds(&fine).is_ok());
        assert!(kinds(r#"{"a":"\u00e9\n\"","b":-0.5E+3,"c":[{},[]]}"#).is_ok());
    }
}
