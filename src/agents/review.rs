//! The reviewer: every number, time and date in an agent's text must appear in the
//! tool results it was given (or in the person's own question). A number may be a
//! rounding of a result's number (`78.8` for `78.77`, `79` too), never anything else.
//! Names of assets, tags, lines and shifts are masked first, so "conveyor2" or
//! "2026-11-28/A" are not read as numbers. Sentences with anything ungrounded are
//! struck; what was struck is reported.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::tools::ToolOutput;
use crate::config::Config;

/// What the reviewer found in one text.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Review {
    /// Numbers, times and dates that no tool result or the question supports.
    pub ungrounded: Vec<String>,
    /// Numbers, times and dates checked.
    pub checked: usize,
    /// The text without the sentences that held something ungrounded.
    pub kept: String,
    /// Sentences struck.
    pub struck: Vec<String>,
}

impl Review {
    /// True when nothing was ungrounded.
    pub fn passed(&self) -> bool {
        self.ungrounded.is_empty()
    }
}

/// The evidence a text is checked against.
#[derive(Clone, Debug, Default)]
pub struct Reviewer {
    numbers: Vec<f64>,
    times: BTreeSet<u32>,
    dates: BTreeSet<String>,
    names: Vec<String>,
    all_names: Vec<String>,
}

/// A token of a text the reviewer checks.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// A number and its count of decimals.
    Number(f64, i32, String),
    /// A clock time, minutes after midnight.
    Time(u32, String),
    /// A date `YYYY-MM-DD`.
    Date(String),
}

impl Reviewer {
    /// Evidence from tool results and the question; names from the configuration.
    pub fn new(outputs: &[ToolOutput], question: &str, config: &Config) -> Reviewer {
        let mut names: Vec<String> = Vec::new();
        for a in &config.assets {
            names.push(a.id.clone());
            names.push(a.name.clone());
        }
        for t in &config.tags {
            names.push(t.name.clone());
        }
        for l in &config.lines {
            names.push(l.id.clone());
            names.push(l.name.clone());
        }
        let all_names = names.clone();
        names.retain(|n| n.chars().any(|c| c.is_ascii_digit()));
        // Longest first, so "conveyor12" is masked before "conveyor1".
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        names.dedup();
        let mut r = Reviewer { names, all_names, ..Reviewer::default() };
        for o in outputs {
            r.add_json(&o.result);
        }
        r.add_text(question);
        r
    }

    fn add_json(&mut self, j: &Json) {
        match j {
            Json::Number(n) => {
                if let Some(v) = n.as_f64() {
                    self.numbers.push(v);
                }
            }
            Json::String(s) => self.add_text(s),
            Json::Array(a) => a.iter().for_each(|v| self.add_json(v)),
            Json::Object(o) => o.values().for_each(|v| self.add_json(v)),
            _ => {}
        }
    }

    fn add_text(&mut self, s: &str) {
        for t in tokens(&self.mask(s)) {
            match t {
                Token::Number(v, _, _) => self.numbers.push(v),
                Token::Time(m, _) => {
                    self.times.insert(m);
                }
                Token::Date(d) => {
                    self.dates.insert(d);
                }
            }
        }
    }

    /// Replaces configured names that contain digits by spaces.
    fn mask(&self, s: &str) -> String {
        let mut out = s.to_string();
        for n in &self.names {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), &" ".repeat(n.len()));
            }
        }
        out
    }

    fn grounded(&self, t: &Token) -> bool {
        match t {
            Token::Number(v, decimals, _) => {
                let tol = 0.5 * 10f64.powi(-decimals) * (1.0 + 1e-9) + 1e-12;
                self.numbers.iter().any(|n| (n - v).abs() <= tol)
            }
            Token::Time(m, _) => {
                self.times.contains(m) || (*m > 0 && self.times.contains(&(m - 1))) || self.times.contains(&(m + 1))
            }
            Token::Date(d) => self.dates.contains(d),
        }
    }

    /// The numbers, times and dates of `text` as written (names masked first).
    pub fn tokens_as_written(&self, text: &str) -> Vec<String> {
        tokens(&self.mask(text))
            .into_iter()
            .map(|t| match t {
                Token::Number(_, _, s) | Token::Time(_, s) | Token::Date(s) => s,
            })
            .collect()
    }

    /// True for a configured asset, tag or line name (case as configured).
    pub fn is_name(&self, word: &str) -> bool {
        !word.is_empty() && (self.all_names.iter().any(|n| n == word))
    }

    /// Checks `text`.
    pub fn review(&self, text: &str) -> Review {
        let mut review = Review::default();
        let mut kept = Vec::new();
        for sentence in sentences(text) {
            let mut ok = true;
            for t in tokens(&self.mask(sentence)) {
                review.checked += 1;
                if !self.grounded(&t) {
                    ok = false;
                    review.ungrounded.push(match t {
                        Token::Number(_, _, s) | Token::Time(_, s) | Token::Date(s) => s,
                    });
                }
            }
            if ok {
                kept.push(sentence);
            } else {
                review.struck.push(sentence.trim().to_string());
            }
        }
        review.kept = kept.concat().trim().to_string();
        review
    }
}

/// Splits after `.`, `!`, `?` followed by a space, after `。！？`, and at line ends,
/// keeping the separators so the kept sentences join back as written.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let next = chars.get(k + 1).map(|&(_, c)| c);
        let end = match c {
            '\n' | '。' | '！' | '？' => true,
            '.' | '!' | '?' => next.is_none_or(|n| n == ' ' || n == '\n'),
            _ => false,
        };
        if end {
            let stop = i + c.len_utf8();
            out.push(&text[start..stop]);
            start = stop;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The numbers in a text (not its clock times or dates; words with digits skipped).
pub fn numbers(text: &str) -> Vec<f64> {
    tokens(text)
        .into_iter()
        .filter_map(|t| match t {
            Token::Number(v, _, _) => Some(v),
            _ => None,
        })
        .collect()
}

/// Numbers, clock times and dates in a text.
fn tokens(s: &str) -> Vec<Token> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let digits = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A digit inside a word (`fault_310`, `A2`) belongs to the word.
        if i > 0 && (b[i - 1].is_ascii_alphabetic() || b[i - 1] == b'_') {
            let j = digits(i);
            i = j;
            continue;
        }
        let j = digits(i);
        // Date YYYY-MM-DD.
        if j - i == 4 && b.get(j) == Some(&b'-') {
            let m = digits(j + 1);
            if m - (j + 1) == 2 && b.get(m) == Some(&b'-') {
                let d = digits(m + 1);
                if d - (m + 1) == 2 {
                    out.push(Token::Date(s[i..d].to_string()));
                    i = d;
                    continue;
                }
            }
        }
        // Clock time H:MM or HH:MM (optional :SS).
        if (1..=2).contains(&(j - i)) && b.get(j) == Some(&b':') {
            let m = digits(j + 1);
            if m - (j + 1) == 2 {
                let h: u32 = s[i..j].parse().unwrap_or(99);
                let mm: u32 = s[j + 1..m].parse().unwrap_or(99);
                let mut end = m;
                if b.get(m) == Some(&b':') && digits(m + 1) - (m + 1) == 2 {
                    end = digits(m + 1);
                }
                if h < 24 && mm < 60 {
                    out.push(Token::Time(h * 60 + mm, s[i..end].to_string()));
                    i = end;
                    continue;
                }
            }
        }
        // Number with optional decimals (and thousands separators `12,345`).
        let mut end = j;
        let mut text: String = s[i..j].to_string();
        while b.get(end) == Some(&b',') && digits(end + 1) - (end + 1) == 3 {
            let e = digits(end + 1);
            text.push_str(&s[end + 1..e]);
            end = e;
        }
        let mut decimals = 0;
        if b.get(end) == Some(&b'.') && end + 1 < b.len() && b[end + 1].is_ascii_digit() {
            let e = digits(end + 1);
            decimals = (e - end - 1) as i32;
            text.push_str(&s[end..e]);
            end = e;
        }
        let negative = i > 0 && b[i - 1] == b'-' && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
        if let Ok(v) = text.parse::<f64>() {
            let v = if negative { -v } else { v };
            out.push(Token::Number(v, decimals, s[if negative { i - 1 } else { i }..end].to_string()));
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviewer(results: Json, question: &str) -> Reviewer {
        let out = ToolOutput { tool: "t".into(), args: Json::Null, result: results };
        let mut r = Reviewer { names: vec!["conveyor2".into()], ..Reviewer::default() };
        r.add_json(&out.result);
        r.add_text(question);
        r
    }

    #[test]
    fn rounding_of_a_result_is_grounded_anything_else_is_struck() {
        let r = reviewer(
            serde_json::json!({ "oee_pct": 78.77, "stops": 3, "since": { "at": "10:40", "local": "2026-11-28 10:40:12" } }),
            "why did conveyor2 stop?",
        );
        let ok = r.review("OEE was 78.8 % (79 %). conveyor2 stopped 3 times, first at 10:40 on 2026-11-28.");
        assert!(ok.passed(), "{ok:?}");
        assert_eq!(ok.checked, 5);
        let bad = r.review("OEE was 78.8 %. It will reach 85 % after 11:15. 3 stops.");
        assert_eq!(bad.ungrounded, vec!["85", "11:15"]);
        assert_eq!(bad.kept, "OEE was 78.8 %. 3 stops.");
        assert_eq!(bad.struck, vec!["It will reach 85 % after 11:15."]);
        // 78.7 is not a rounding of 78.77; 2026-11-29 is not in the results.
        assert_eq!(r.review("OEE 78.7 on 2026-11-29").ungrounded, vec!["78.7", "2026-11-29"]);
    }

    #[test]
    fn words_with_digits_are_not_numbers_and_chinese_sentences_split() {
        let r = reviewer(serde_json::json!({ "cause": "fault_310", "minutes": 21.2 }), "");
        let t = r.review("停机原因是 fault_310，共 21.2 分钟。再停 5 分钟。");
        assert_eq!(t.ungrounded, vec!["5"]);
        assert_eq!(t.kept, "停机原因是 fault_310，共 21.2 分钟。");
        assert_eq!(
            tokens("-3.5 and 12,345.6"),
            vec![Token::Number(-3.5, 1, "-3.5".into()), Token::Number(12345.6, 1, "12,345.6".into())]
        );
    }
}
