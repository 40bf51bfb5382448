//! A hand-written o200k pre-tokenizer: the same splits as tiktoken's o200k regex,
//! without a regex engine. Printable ASCII takes a byte path; any other text a char
//! path whose character classes (letters by case, marks, numbers, white space) come
//! from the Unicode tables of the very regex crate bpe-openai's split uses. Parity is
//! checked against that split and tiktoken on real prompts and random strings, ASCII
//! and Unicode (tests here and in tests/it/tokens.rs).
//!
//! The pattern, alternatives tried in order at each position:
//!   1. [^\r\n L N]? [Lu]* [Ll]+ contraction?     2. [^\r\n L N]? [Lu]+ [Ll]* contraction?
//!   3. N{1,3}    4. ' '? [^\s L N]+ [\r\n/]*    5. \s* [\r\n]+    6. \s+(?!\S)    7. \s+

/// True when the fast path applies: only printable ASCII, tab, LF and CR.
pub fn is_plain_ascii(text: &[u8]) -> bool {
    text.iter()
        .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t' || b == b'\n' || b == b'\r')
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// `[^\r\n\p{L}\p{N}]`: may prefix a word.
fn is_prefix(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b == b'\r' || b == b'\n')
}

/// `[^\s\p{L}\p{N}]`: punctuation and symbols.
fn is_punct(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || is_space(b))
}

fn run(t: &[u8], mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
    while i < t.len() && pred(t[i]) {
        i += 1;
    }
    i
}

/// Length of an optional contraction (`'s`, `'RE`, ...) at `i`.
fn contraction(t: &[u8], i: usize) -> usize {
    if t.get(i) != Some(&b'\'') {
        return 0;
    }
    let a = t.get(i + 1).map(u8::to_ascii_lowercase);
    let b = t.get(i + 2).map(u8::to_ascii_lowercase);
    match (a, b) {
        (Some(b's' | b't' | b'm' | b'd'), _) => 2,
        (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => 3,
        _ => 0,
    }
}

/// The end of the piece that starts at `i` (< t.len()).
fn piece_end(t: &[u8], i: usize) -> usize {
    let c = t[i];
    // 1 and 2: words, with an optional prefix character.
    let j = if is_prefix(c) { i + 1 } else { i };
    let upper = run(t, j, |b| b.is_ascii_uppercase());
    let lower = run(t, upper, |b| b.is_ascii_lowercase());
    if lower > upper || upper > j {
        return lower + contraction(t, lower);
    }
    // 3: up to three digits.
    if c.is_ascii_digit() {
        return run(t, i, |b| b.is_ascii_digit()).min(i + 3);
    }
    // 4: punctuation, with an optional leading space and trailing newlines/slashes.
    let j = if c == b' ' { i + 1 } else { i };
    let punct = run(t, j, is_punct);
    if punct > j {
        return run(t, punct, |b| b == b'\r' || b == b'\n' || b == b'/');
    }
    // 5-7: whitespace.
    let ws_end = run(t, i, is_space);
    if let Some(last_newline) = t[i..ws_end].iter().rposition(|&b| b == b'\r' || b == b'\n') {
        return i + last_newline + 1;
    }
    if ws_end == t.len() || ws_end - i == 1 {
        ws_end
    } else {
        ws_end - 1
    }
}

/// Calls `f` with every piece of `text`, which must pass [`is_plain_ascii`].
pub fn for_each_piece<'a>(text: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let mut i = 0;
    while i < text.len() {
        let end = piece_end(text, i);
        f(&text[i..end]);
        i = end;
    }
}

/// The o200k pattern's classes of a char, as bits.
const UPPER: u8 = 1; // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]: may be in a word's capital run
const LOWER: u8 = 2; // [\p{Ll}\p{Lm}\p{Lo}\p{M}]: may be in a word's small run
const LETTER: u8 = 4; // \p{L}
const NUMBER: u8 = 8; // \p{N}
const SPACE: u8 = 16; // \s

/// Chars below this have their classes in a table (the Basic Multilingual Plane and
/// the next, where emoji and mathematical letters live).
const TABLE: u32 = 0x20000;

struct Classes {
    /// Below [`TABLE`], a byte of bits per char.
    table: Box<[u8]>,
    /// Above it, ranges of chars with their bits.
    rest: Vec<(u32, u32, u8)>,
}

static CLASSES: std::sync::LazyLock<Classes> = std::sync::LazyLock::new(|| {
    let mut table = vec![0u8; TABLE as usize].into_boxed_slice();
    let mut rest: Vec<(u32, u32, u8)> = Vec::new();
    for (bit, pattern) in [
        (UPPER, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"),
        (LOWER, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"),
        (LETTER, r"\p{L}"),
        (NUMBER, r"\p{N}"),
        (SPACE, r"\s"),
    ] {
        let hir = regex_syntax::parse(pattern).expect("a class pattern");
        let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) =
            hir.kind()
        else {
            unreachable!("{pattern} is a Unicode class")
        };
        for r in class.ranges() {
            let (start, end) = (u32::from(r.start()), u32::from(r.end()));
            for c in start..=end.min(TABLE - 1) {
                table[c as usize] |= bit;
            }
            if end >= TABLE {
                rest.push((start.max(TABLE), end, bit));
            }
        }
    }
    Classes { table, rest }
});

/// Is `c` a letter or a number (`\p{L}`, `\p{N}`)? A table lookup, unlike `char`'s
/// own methods for non-ASCII chars.
pub fn is_letter_or_number(c: char) -> bool {
    classes_of(c) & (LETTER | NUMBER) != 0
}

/// Is `c` punctuation or a symbol that only a punctuation run can hold
/// (`[^\s\p{L}\p{N}]`, and not a mark, which a word may hold too)?
pub fn is_symbol(c: char) -> bool {
    classes_of(c) & (UPPER | LOWER | LETTER | NUMBER | SPACE) == 0
}

/// Is `c` a letter (`\p{L}`)?
pub fn is_letter(c: char) -> bool {
    classes_of(c) & LETTER != 0
}

fn classes_of(c: char) -> u8 {
    let cl = &*CLASSES;
    match c as u32 {
        n if n < TABLE => cl.table[n as usize],
        n => cl
            .rest
            .iter()
            .filter(|(start, end, _)| (*start..=*end).contains(&n))
            .fold(0, |bits, (_, _, b)| bits | b),
    }
}

/// The char at byte `i` of `t` (on a char boundary) and its classes, decoded from the
/// bytes (the text is valid UTF-8).
#[inline]
fn at(t: &str, i: usize) -> Option<(char, u8)> {
    let b = t.as_bytes();
    let x = *b.get(i)?;
    let c = match x {
        0..=0x7F => return Some((char::from(x), CLASSES.table[usize::from(x)])),
        0xC0..=0xDF => (u32::from(x & 0x1F) << 6) | u32::from(b[i + 1] & 0x3F),
        0xE0..=0xEF => {
            (u32::from(x & 0x0F) << 12)
                | (u32::from(b[i + 1] & 0x3F) << 6)
                | u32::from(b[i + 2] & 0x3F)
        }
        _ => {
            (u32::from(x & 0x07) << 18)
                | (u32::from(b[i + 1] & 0x3F) << 12)
                | (u32::from(b[i + 2] & 0x3F) << 6)
                | u32::from(b[i + 3] & 0x3F)
        }
    };
    // Valid UTF-8 decodes to a char.
    let c = char::from_u32(c).expect("valid UTF-8");
    Some((c, classes_of(c)))
}

/// The byte after the run of chars from `i` whose classes satisfy `pred`, and how many
/// chars it holds (at most `max`).
fn run_chars(t: &str, mut i: usize, max: usize, pred: impl Fn(char, u8) -> bool) -> (usize, usize) {
    let mut n = 0;
    while n < max {
        match at(t, i) {
            Some((c, bits)) if pred(c, bits) => {
                i += c.len_utf8();
                n += 1;
            }
            _ => break,
        }
    }
    (i, n)
}

/// Length of an optional contraction at `i` (`(?i:'s|'t|'re|'ve|'m|'ll|'d)`; under
/// Unicode case folding `s` also matches `ſ`).
fn contraction_unicode(t: &str, i: usize) -> usize {
    let rest = &t[i..];
    let Some(after) = rest.strip_prefix('\'') else {
        return 0;
    };
    let mut chars = after.chars().map(|c| c.to_ascii_lowercase());
    let len = |n: usize| 1 + after.chars().take(n).map(char::len_utf8).sum::<usize>();
    match (chars.next(), chars.next()) {
        (Some('s' | 'ſ' | 't' | 'm' | 'd'), _) => len(1),
        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => len(2),
        _ => 0,
    }
}

/// The first word alternative at `j`, `[U]*[L]+` and an optional contraction.
fn small_word_end(t: &str, j: usize) -> Option<usize> {
    let (upper_end, _) = run_chars(t, j, usize::MAX, |_, b| b & UPPER != 0);
    let (lower_end, _) = run_chars(t, upper_end, usize::MAX, |_, b| b & LOWER != 0);
    let end = if lower_end > upper_end {
        Some(lower_end)
    } else {
        // `[U]*` gives back chars until `[L]+` can take one: the last char of the
        // capital run that is also in the small class (Lm, Lo, M) ends the word.
        t[j..upper_end]
            .char_indices()
            .rfind(|(_, c)| classes_of(*c) & LOWER != 0)
            .map(|(k, c)| j + k + c.len_utf8())
    };
    end.map(|e| e + contraction_unicode(t, e))
}

/// The second word alternative at `j`, `[U]+[L]*` and an optional contraction.
fn capital_word_end(t: &str, j: usize) -> Option<usize> {
    let (upper_end, uppers) = run_chars(t, j, usize::MAX, |_, b| b & UPPER != 0);
    let (lower_end, _) = run_chars(t, upper_end, usize::MAX, |_, b| b & LOWER != 0);
    (uppers > 0).then(|| lower_end + contraction_unicode(t, lower_end))
}

/// The end of the piece that starts at byte `i` (< t.len()) of any text.
fn piece_end_unicode(t: &str, i: usize) -> usize {
    let (c, bits) = at(t, i).expect("i is on a char");
    let after_c = i + c.len_utf8();
    // 1 and 2: words, with an optional prefix char (neither a letter, a number nor a
    // line break). A regex tries each alternative whole — with the prefix, then
    // without (a mark may be both a prefix and part of a word) — before the next.
    let prefix = bits & (LETTER | NUMBER) == 0 && c != '\r' && c != '\n';
    for alternative in [small_word_end, capital_word_end] {
        if prefix {
            if let Some(end) = alternative(t, after_c) {
                return end;
            }
        }
        if let Some(end) = alternative(t, i) {
            return end;
        }
    }
    // 3: up to three numbers.
    if bits & NUMBER != 0 {
        return run_chars(t, i, 3, |_, b| b & NUMBER != 0).0;
    }
    // 4: punctuation, with an optional leading space and trailing newlines/slashes.
    let punct = |_: char, b: u8| b & (SPACE | LETTER | NUMBER) == 0;
    let j = if c == ' ' { after_c } else { i };
    let (punct_end, n) = run_chars(t, j, usize::MAX, punct);
    if n > 0 {
        return run_chars(t, punct_end, usize::MAX, |c, _| {
            matches!(c, '\r' | '\n' | '/')
        })
        .0;
    }
    // 5-7: white space.
    let (ws_end, n) = run_chars(t, i, usize::MAX, |_, b| b & SPACE != 0);
    let ws = &t[i..ws_end];
    if let Some(k) = ws.rfind(['\r', '\n']) {
        return i + k + 1;
    }
    if ws_end == t.len() || n == 1 {
        ws_end
    } else {
        ws_end - ws.chars().last().map_or(0, char::len_utf8)
    }
}

/// Calls `f` with every piece of any `text` (the char path).
pub fn for_each_piece_unicode<'a>(text: &'a str, mut f: impl FnMut(&'a [u8])) {
    let mut i = 0;
    while i < text.len() {
        let end = piece_end_unicode(text, i);
        f(&text.as_bytes()[i..end]);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for_each_piece(s.as_bytes(), |p| out.push(std::str::from_utf8(p).unwrap()));
        out
    }

    #[test]
    fn splits_like_o200k() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(pieces("don't STOP"), ["don't", " STOP"]);
        assert_eq!(pieces("a  b"), ["a", " ", " b"]);
        assert_eq!(pieces("x 12345"), ["x", " ", "123", "45"]);
        assert_eq!(pieces("end.\n\nNext"), ["end", ".\n\n", "Next"]);
        assert_eq!(pieces("  \n  x"), ["  \n", " ", " x"]);
        assert_eq!(pieces("trailing  "), ["trailing", "  "]);
        assert_eq!(pieces("helloWorld"), ["hello", "World"]);
    }

    fn regex_pieces(s: &str) -> Vec<&str> {
        bpe_openai::o200k_base().split(s).collect()
    }

    fn unicode_pieces(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for_each_piece_unicode(s, |p| out.push(std::str::from_utf8(p).unwrap()));
        out
    }

    #[test]
    fn the_char_path_splits_like_the_regex() {
        for s in [
            "Hello world",
            "日本語のテキストです。東京",
            "Привет, мир! Как дела?",
            "Größe über Straße 12345",
            "ǅemal ʰello ЀX",
            "ｈｅｌｌｏ　world",
            "e\u{301}te\u{301} cafe\u{301}",
            "emoji 🙂👍🏽 done 🎉\n\n",
            "١٢٣٤ and ⅫⅢ ½¾",
            "don'ſ It'S we'LL",
            " \u{a0}\u{a0}x\u{2003}\u{2003}",
            "\u{301}\u{301}a",
            "a\u{200d}b\u{fe0f}",
        ] {
            assert_eq!(unicode_pieces(s), regex_pieces(s), "{s:?}");
        }
    }

    #[test]
    fn random_unicode_splits_like_the_regex() {
        let alphabet: &[&str] = &[
            "a",
            "Z",
            "Qu",
            "'s",
            "'T",
            "'re",
            "'LL",
            "'",
            "ſ",
            "0",
            "12",
            "3456",
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            ".",
            ",",
            "!?",
            "/",
            "-",
            "\"",
            "é",
            "É",
            "ß",
            "ǅ",
            "ʰ",
            "ª",
            "日",
            "本",
            "の",
            "カ",
            "한",
            "ж",
            "Ж",
            "ψ",
            "Ω",
            "\u{301}",
            "\u{fe0f}",
            "\u{200d}",
            "🙂",
            "👍🏽",
            "١",
            "Ⅻ",
            "½",
            "\u{a0}",
            "\u{2003}",
            "\u{3000}",
            "。",
            "，",
            "€",
            "©",
            "𝒜",
            "𝓍",
            "𐐀",
            "𐐨",
            "\u{1d7ce}",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = 1 + next() % 20;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(unicode_pieces(&s), regex_pieces(&s), "{s:?}");
        }
    }
}
