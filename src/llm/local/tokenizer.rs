//! The tokenizer, built from the GGUF file's own metadata (tokens, merges, token
//! types, special ids): no tokenizer download.
//!
//! candle builds the byte-level BPE; we fix the pre-tokenizer for families it does not
//! know (SmolLM2's `smollm`: each digit on its own, then GPT-2's split, no prefix
//! space), and build chat prompts so that only the template, never the content, can
//! produce special tokens: a tag description that says `<|im_end|>` stays text.

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;

use super::LocalError;
use crate::llm::{ChatMessage, Role};

/// A GGUF model's tokenizer with its chat template and stop tokens.
pub struct GgufTokenizer {
    inner: Tokenizer,
    /// `tokenizer.ggml.pre`, e.g. `smollm` or `qwen2`.
    pre: String,
    im_start: u32,
    im_end: u32,
    stops: Vec<u32>,
    /// Token strings as the GGUF spells them, and whether each is a control token.
    tokens: Vec<String>,
    special: Vec<bool>,
}

fn tok_err(e: impl std::fmt::Display) -> LocalError {
    LocalError::Tokenizer(e.to_string())
}

impl GgufTokenizer {
    /// Builds the tokenizer from the metadata of `ct`.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<GgufTokenizer, LocalError> {
        let mut inner = Tokenizer::from_gguf(ct).map_err(tok_err)?;
        let pre = ct
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| "gpt2".to_string());
        if pre == "smollm" {
            // llama.cpp's `smollm` pre-tokenizer: `\p{N}` then GPT-2's regex; byte level
            // without a prefix space.
            inner.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])));
            inner.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        }
        let id = |t: &str| inner.token_to_id(t).ok_or_else(|| LocalError::Tokenizer(format!("no `{t}` token")));
        let im_start = id("<|im_start|>")?;
        let im_end = id("<|im_end|>")?;
        let mut stops = vec![im_end];
        if let Some(e) = inner.token_to_id("<|endoftext|>") {
            stops.push(e);
        }
        if let Some(e) = ct.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()) {
            if !stops.contains(&e) {
                stops.push(e);
            }
        }
        // Content is data: special-token text inside it is encoded as plain text.
        inner.set_encode_special_tokens(true);
        let tokens: Vec<String> = match ct.metadata.get("tokenizer.ggml.tokens").map(|v| v.to_vec()) {
            Some(Ok(a)) => a.iter().map(|v| v.to_string().cloned().unwrap_or_default()).collect(),
            _ => return Err(LocalError::MissingMetadata("tokenizer.ggml.tokens".into())),
        };
        let special: Vec<bool> = match ct.metadata.get("tokenizer.ggml.token_type").map(|v| v.to_vec()) {
            // llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
            Some(Ok(a)) => a.iter().map(|v| v.to_i32().map(|t| t != 1 && t != 6).unwrap_or(false)).collect(),
            _ => vec![false; tokens.len()],
        };
        Ok(GgufTokenizer { inner, pre, im_start, im_end, stops, tokens, special })
    }

    /// The pre-tokenizer family from the file.
    pub fn pre(&self) -> &str {
        &self.pre
    }

    /// Tokens that end the assistant's turn.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stops
    }

    /// Size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes plain text (special-token text stays text).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LocalError> {
        Ok(self.inner.encode_fast(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Decodes ids to text, leaving out special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LocalError> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// The vocabulary as the GGUF spells it, and which tokens are control tokens
    /// (for constrained decoding).
    pub fn vocabulary(&self) -> (&[String], &[bool]) {
        (&self.tokens, &self.special)
    }

    /// The ChatML prompt both supported families use:
    /// `<|im_start|>role\ncontent<|im_end|>\n` per message, then `<|im_start|>assistant\n`.
    /// No BOS.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, LocalError> {
        let mut ids = Vec::new();
        let newline = self.encode("\n")?;
        for m in messages {
            ids.push(self.im_start);
            ids.extend(self.encode(&format!("{}\n{}", m.role.as_str(), m.content))?);
            ids.push(self.im_end);
            ids.extend_from_slice(&newline);
        }
        ids.push(self.im_start);
        ids.extend(self.encode(&format!("{}\n", Role::Assistant.as_str()))?);
        Ok(ids)
    }
}

/// Turns generated ids into text as it grows, holding back an incomplete UTF-8 character.
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// An empty stream.
    pub fn new() -> TextStream {
        TextStream { ids: Vec::new(), emitted: 0 }
    }

    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, tok: &GgufTokenizer, id: u32) -> Result<Option<String>, LocalError> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(None);
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(new))
    }

    /// All text so far.
    pub fn text(&self, tok: &GgufTokenizer) -> Result<String, LocalError> {
        tok.decode(&self.ids)
    }
}

impl Default for TextStream {
    fn default() -> Self {
        TextStream::new()
    }
}
