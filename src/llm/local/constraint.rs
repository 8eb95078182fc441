//! Constrained decoding: output that must match a JSON schema (a tool call, a
//! structured finding) is enforced by masking the logits of every token that could not
//! continue a valid document, so even a 135M model cannot emit an invalid tool call.
//!
//! The grammar engine is `llguidance` (the one llama.cpp and vLLM use). Its token table
//! is built from the GGUF vocabulary itself: each byte-level BPE token is turned back
//! into its bytes; special tokens are marked so no grammar can produce them as text.
//! The end of the document maps to the model's end-of-turn token.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, InferenceCapabilities, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};

use super::LocalError;

/// The vocabulary indexed for the grammar engine; built once per model.
pub struct ConstraintFactory {
    factory: ParserFactory,
    vocab_size: usize,
}

/// GPT-2's byte-to-character table, inverted: the character a byte-level BPE token
/// uses for each byte.
fn byte_of_char(c: char) -> Option<u8> {
    let c = c as u32;
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if c < 256 && printable(c) {
        return Some(c as u8);
    }
    // The other 68 bytes are mapped, in order, to 256, 257, ...
    let mut n = 256;
    for b in 0u32..256 {
        if !printable(b) {
            if n == c {
                return Some(b as u8);
            }
            n += 1;
        }
    }
    None
}

/// The bytes a byte-level BPE token stands for; `None` if it is not byte-level text.
pub fn token_bytes(token: &str) -> Option<Vec<u8>> {
    token.chars().map(byte_of_char).collect()
}

impl ConstraintFactory {
    /// Indexes a vocabulary: `tokens[i]` is token `i` as the GGUF spells it, `special[i]`
    /// whether it is a control token; `end` is the end-of-turn token.
    pub fn new(tokens: &[String], special: &[bool], end: u32) -> Result<ConstraintFactory, LocalError> {
        let words: Vec<Vec<u8>> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if special.get(i).copied().unwrap_or(false) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(t.as_bytes());
                    w
                } else {
                    token_bytes(t).unwrap_or_else(|| {
                        let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                        w.extend_from_slice(t.as_bytes());
                        w
                    })
                }
            })
            .collect();
        let info = TokRxInfo::new(words.len() as u32, end);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &llguidance::earley::SlicedBiasComputer::general_slices(),
        )
        .map_err(|e| LocalError::Constraint(e.to_string()))?;
        Ok(ConstraintFactory { factory, vocab_size: words.len() })
    }

    /// Starts a document that must match `schema`.
    pub fn json(&self, schema: &serde_json::Value) -> Result<JsonConstraint, LocalError> {
        let grammar = TopLevelGrammar::from_json_schema(schema.clone());
        let parser = self.factory.create_parser(grammar).map_err(|e| LocalError::Constraint(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(LocalError::Constraint(e));
        }
        Ok(JsonConstraint { matcher, vocab_size: self.vocab_size })
    }
}

/// The state of one constrained generation.
pub struct JsonConstraint {
    matcher: Matcher,
    vocab_size: usize,
}

impl JsonConstraint {
    /// Whether the document is complete (only the end of turn may follow).
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Which of `logits_len` tokens may come next (the end-of-turn token once the
    /// document is complete).
    pub fn allowed(&mut self, logits_len: usize) -> Result<Vec<bool>, LocalError> {
        let mask = self.matcher.compute_mask_or_eos().map_err(|e| LocalError::Constraint(e.to_string()))?;
        let mut allowed = vec![false; logits_len];
        mask.iter_set_entries(|i| {
            if i < logits_len && i < self.vocab_size {
                allowed[i] = true;
            }
        });
        Ok(allowed)
    }

    /// Takes the picked token.
    pub fn advance(&mut self, token: u32) -> Result<(), LocalError> {
        self.matcher.consume_token(token).map_err(|e| LocalError::Constraint(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_turn_back_into_bytes() {
        assert_eq!(token_bytes("Hello").as_deref(), Some(&b"Hello"[..]));
        // 'Ġ' (U+0120) is the space, 'Ċ' (U+010A) the newline.
        assert_eq!(token_bytes("\u{120}world\u{10a}").as_deref(), Some(&b" world\n"[..]));
        assert_eq!(token_bytes("\u{100}").as_deref(), Some(&[0u8][..]));
    }

    #[test]
    fn only_schema_conforming_text_can_be_spelled() {
        // A toy vocabulary of single bytes plus a few words; 0 is the end token.
        let mut tokens = vec!["<end>".to_string()];
        let mut special = vec![true];
        for b in 32u8..127 {
            tokens.push((b as char).to_string());
            special.push(false);
        }
        for w in ["{\"", "\":", "true", "false", "\u{120}"] {
            tokens.push(w.to_string());
            special.push(false);
        }
        let f = ConstraintFactory::new(&tokens, &special, 0).expect("factory");
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": false
        });
        let mut c = f.json(&schema).expect("grammar");
        let id = |s: &str| tokens.iter().position(|t| t == s).expect("token") as u32;
        let first = c.allowed(tokens.len()).expect("mask");
        assert!(first[id("{\"") as usize] || first[id("{") as usize]);
        assert!(!first[id("x") as usize], "a document cannot start with x");
        for t in ["{\"", "o", "k", "\":"] {
            c.advance(id(t)).expect("advance");
        }
        let m = c.allowed(tokens.len()).expect("mask");
        assert!(m[id("true") as usize] && m[id("false") as usize]);
        assert!(!m[id("7") as usize], "ok is a boolean");
        c.advance(id("true")).expect("advance");
        c.advance(id("}")).expect("advance");
        let end = c.allowed(tokens.len()).expect("mask");
        assert!(end[0], "the document is complete: the end token is allowed");
        assert_eq!(end.iter().filter(|&&a| a).count(), 1, "and only it");
    }
}
