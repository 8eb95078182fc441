//! Redaction before anything leaves the plant: configured names (site, assets, tags,
//! extra words) are replaced by placeholders in what is sent to the cloud, and put back
//! in the answer. Longer names are replaced first, so `filler.bowl_pressure` is one
//! placeholder and not `ASSET_1.bowl_pressure`.

/// A two-way map between names and placeholders.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// (name, placeholder), longest name first.
    pairs: Vec<(String, String)>,
}

/// What kind of name a placeholder stands for (it names the placeholder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// The site.
    Site,
    /// An asset id or display name.
    Asset,
    /// A tag name.
    Tag,
    /// Any other configured word.
    Word,
}

impl NameKind {
    fn prefix(self) -> &'static str {
        match self {
            NameKind::Site => "SITE",
            NameKind::Asset => "ASSET",
            NameKind::Tag => "TAG",
            NameKind::Word => "NAME",
        }
    }
}

impl Redactor {
    /// A redactor for `names`; empty and duplicate names are skipped.
    pub fn new<'a>(names: impl IntoIterator<Item = (NameKind, &'a str)>) -> Redactor {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut counts = [0usize; 4];
        for (kind, name) in names {
            let name = name.trim();
            if name.len() < 2 || pairs.iter().any(|(n, _)| n == name) {
                continue;
            }
            let k = kind as usize;
            counts[k] += 1;
            pairs.push((name.to_string(), format!("[{}_{}]", kind.prefix(), counts[k])));
        }
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Redactor { pairs }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Replaces every configured name in `text` by its placeholder.
    pub fn redact(&self, text: &str) -> String {
        replace_all(text, self.pairs.iter().map(|(n, p)| (n.as_str(), p.as_str())))
    }

    /// Puts the names back in place of their placeholders.
    pub fn restore(&self, text: &str) -> String {
        replace_all(text, self.pairs.iter().map(|(n, p)| (p.as_str(), n.as_str())))
    }
}

/// Replaces, scanning left to right, the first (longest-listed) match at each position,
/// so a replacement is never itself rewritten.
fn replace_all<'a>(text: &str, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'outer: while i < text.len() {
        for (from, to) in pairs.clone() {
            if text[i..].starts_with(from) {
                out.push_str(to);
                i += from.len();
                continue 'outer;
            }
        }
        let ch = text[i..].chars().next().map(char::len_utf8).unwrap_or(1);
        out.push_str(&text[i..i + ch]);
        i += ch;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new([
            (NameKind::Site, "Suzhou Plant 3"),
            (NameKind::Asset, "filler"),
            (NameKind::Asset, "Filler 2"),
            (NameKind::Tag, "filler.bowl_pressure"),
        ])
    }

    #[test]
    fn names_leave_as_placeholders_and_come_back() {
        let r = r();
        let q = "Why did Filler 2 (filler) at Suzhou Plant 3 stop? filler.bowl_pressure was 2.1 bar.";
        let out = r.redact(q);
        assert!(!out.contains("filler") && !out.contains("Suzhou") && !out.contains("Filler 2"), "{out}");
        assert!(out.contains("2.1 bar"), "numbers stay: {out}");
        assert!(out.contains("[TAG_1]"), "the tag is one placeholder, not asset + suffix: {out}");
        assert_eq!(r.restore(&out), q);
    }

    #[test]
    fn an_answer_that_uses_placeholders_is_restored_and_unknown_text_is_kept() {
        let r = r();
        let a = "[ASSET_2] stopped because [TAG_1] fell; check [ASSET_9].";
        assert_eq!(r.restore(a), "Filler 2 stopped because filler.bowl_pressure fell; check [ASSET_9].");
        assert_eq!(r.redact("灌装机 filler 停机"), "灌装机 [ASSET_1] 停机");
    }
}
