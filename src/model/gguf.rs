//! A small reader for the metadata header of GGUF files.
//!
//! We read the header ourselves (rather than through the engine) because we
//! need it before and beside loading: `agent model info` shows the
//! architecture and context length without loading weights, the local
//! backend refuses architectures mistral.rs cannot load with a clear
//! message, and the stop tokens are derived from the tokenizer metadata
//! (EOS, end-of-text, the chat template's end-of-turn token).
//!
//! Only the key/value section is read; tensor data is never touched. Every
//! length read from the file is bounded, so a corrupt or hostile file gives
//! an error, not a huge allocation.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

/// Longest string value accepted (chat templates are a few KiB).
const MAX_STRING: u64 = 16 << 20;
/// Most elements accepted in one array (vocabularies are ~150k).
const MAX_ARRAY: u64 = 16 << 20;
/// Most key/value pairs accepted.
const MAX_KEYS: u64 = 1 << 16;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any integer type (u8..u64, i8..i64), widened.
    Int(i128),
    /// f32 or f64.
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as a non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A GGUF file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF file (bad magic); is it a complete download?")]
    NotGguf { path: String },
    #[error("{path} is a corrupt GGUF file: {reason}; delete it and pull it again")]
    Corrupt { path: String, reason: String },
}

/// The metadata of a GGUF file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufMetadata {
    /// Format version (2 or 3).
    pub version: u32,
    /// Number of tensors declared.
    pub tensor_count: u64,
    /// Every key/value pair.
    pub values: BTreeMap<String, GgufValue>,
}

/// Token type code for control tokens (`<|im_end|>`, `<|endoftext|>`).
const TOKEN_TYPE_CONTROL: i128 = 3;

/// Text forms of "end of text" across tokenizers.
const END_OF_TEXT_FORMS: &[&str] = &[
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "<|end▁of▁sentence|>",
];

impl GgufMetadata {
    /// Read the metadata of the file at `path`.
    pub fn read_file(path: &Path) -> Result<Self, GgufError> {
        let shown = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|source| GgufError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::read(BufReader::with_capacity(1 << 16, f), &shown)
    }

    /// Read metadata from a reader positioned at the start of a GGUF file;
    /// `name` is used in errors.
    pub fn read(reader: impl Read, name: &str) -> Result<Self, GgufError> {
        let mut r = Reader {
            inner: reader,
            name,
        };
        let mut magic = [0u8; 4];
        r.bytes(&mut magic)?;
        if &magic != b"GGUF" {
            return Err(GgufError::NotGguf {
                path: name.to_string(),
            });
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.corrupt(format!("unsupported GGUF version {version}")));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        if kv_count > MAX_KEYS {
            return Err(r.corrupt(format!("{kv_count} metadata keys")));
        }
        let mut values = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            values.insert(key, value);
        }
        Ok(Self {
            version,
            tensor_count,
            values,
        })
    }

    /// A value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.values.get(key)
    }

    /// `general.architecture` (`llama`, `qwen3`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// `general.name`.
    pub fn name(&self) -> Option<&str> {
        self.get("general.name").and_then(GgufValue::as_str)
    }

    /// The context length the model was trained for (`ARCH.context_length`).
    pub fn context_length(&self) -> Option<usize> {
        let arch = self.architecture()?;
        let v = self.get(&format!("{arch}.context_length"))?.as_u64()?;
        usize::try_from(v).ok()
    }

    /// `general.file_type` as llama.cpp names it (`Q4_1`, `Q4_K_M`, ...).
    pub fn file_type(&self) -> Option<&'static str> {
        let code = self.get("general.file_type")?.as_u64()?;
        Some(match code {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            7 => "Q8_0",
            8 => "Q5_0",
            9 => "Q5_1",
            10 => "Q2_K",
            11 => "Q3_K_S",
            12 => "Q3_K_M",
            13 => "Q3_K_L",
            14 => "Q4_K_S",
            15 => "Q4_K_M",
            16 => "Q5_K_S",
            17 => "Q5_K_M",
            18 => "Q6_K",
            32 => "BF16",
            _ => "other",
        })
    }

    /// The vocabulary (`tokenizer.ggml.tokens`), if present.
    pub fn tokens(&self) -> Option<Vec<&str>> {
        match self.get("tokenizer.ggml.tokens")? {
            GgufValue::Array(a) => a.iter().map(GgufValue::as_str).collect(),
            _ => None,
        }
    }

    /// The chat template (`tokenizer.chat_template`), if present.
    pub fn chat_template(&self) -> Option<&str> {
        self.get("tokenizer.chat_template")
            .and_then(GgufValue::as_str)
    }

    /// The token ids generation must stop at: the tokenizer's EOS, its
    /// end-of-text token, any declared end-of-turn/end-of-message token, and
    /// the control token the chat template writes right after a message's
    /// content (its end-of-turn marker). Sorted, without duplicates.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = self
                .get(key)
                .and_then(GgufValue::as_u64)
                .and_then(|v| u32::try_from(v).ok())
            {
                ids.push(id);
            }
        }
        if let Some(tokens) = self.tokens() {
            let types: Vec<i128> = match self.get("tokenizer.ggml.token_type") {
                Some(GgufValue::Array(a)) => a
                    .iter()
                    .map(|v| if let GgufValue::Int(i) = v { *i } else { 0 })
                    .collect(),
                _ => Vec::new(),
            };
            let is_control = |i: usize| types.get(i).is_none_or(|t| *t == TOKEN_TYPE_CONTROL);
            // End of text: the tokenizer's own token by its conventional names.
            for (i, t) in tokens.iter().enumerate() {
                if END_OF_TEXT_FORMS.contains(t) && is_control(i) {
                    ids.extend(u32::try_from(i).ok());
                }
            }
            // End of turn: the control token that most often follows a
            // message's content in the chat template.
            if let Some(template) = self.chat_template() {
                let controls: Vec<(usize, &str)> = tokens
                    .iter()
                    .enumerate()
                    .filter(|(i, t)| {
                        !types.is_empty() && is_control(*i) && t.len() > 2 && template.contains(**t)
                    })
                    .map(|(i, t)| (i, *t))
                    .collect();
                if let Some(id) = end_of_turn(template, &controls) {
                    ids.extend(u32::try_from(id).ok());
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The control token that most often comes first after an occurrence of
/// `content` in the template (`message['content'] + '<|im_end|>'`).
fn end_of_turn(template: &str, controls: &[(usize, &str)]) -> Option<usize> {
    let mut votes: BTreeMap<usize, usize> = BTreeMap::new();
    for (at, _) in template.match_indices("content") {
        let after = &template[at..];
        let next = controls
            .iter()
            .filter_map(|(id, text)| after.find(text).map(|pos| (pos, *id)))
            .min();
        if let Some((_, id)) = next {
            *votes.entry(id).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .max_by_key(|(id, n)| (*n, std::cmp::Reverse(*id)))
        .map(|(id, _)| id)
}

struct Reader<'a, R> {
    inner: R,
    name: &'a str,
}

impl<R: Read> Reader<'_, R> {
    fn corrupt(&self, reason: String) -> GgufError {
        GgufError::Corrupt {
            path: self.name.to_string(),
            reason,
        }
    }

    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt("the header ends early".to_string())
            } else {
                GgufError::Io {
                    path: self.name.to_string(),
                    source: e,
                }
            }
        })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.bytes(&mut b)?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(self.corrupt(format!("a string of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.bytes(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            0 => GgufValue::Int(u8::from_le_bytes(self.array()?).into()),
            1 => GgufValue::Int(i8::from_le_bytes(self.array()?).into()),
            2 => GgufValue::Int(u16::from_le_bytes(self.array()?).into()),
            3 => GgufValue::Int(i16::from_le_bytes(self.array()?).into()),
            4 => GgufValue::Int(u32::from_le_bytes(self.array()?).into()),
            5 => GgufValue::Int(i32::from_le_bytes(self.array()?).into()),
            6 => GgufValue::Float(f32::from_le_bytes(self.array()?).into()),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.corrupt("arrays nested too deeply".to_string()));
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                if n > MAX_ARRAY {
                    return Err(self.corrupt(format!("an array of {n} elements")));
                }
                let mut v = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::Int(u64::from_le_bytes(self.array()?).into()),
            11 => GgufValue::Int(i64::from_le_bytes(self.array()?).into()),
            12 => GgufValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(self.corrupt(format!("unknown value type {other}"))),
        })
    }
}

/// Builds small GGUF headers for tests (here and in other modules).
#[cfg(test)]
pub(crate) mod testing {
    /// A metadata value to write.
    pub enum V<'a> {
        U32(u32),
        Str(&'a str),
        Strs(&'a [&'a str]),
        I32s(&'a [i32]),
    }

    /// A GGUF v3 header with these key/value pairs and no tensors.
    pub fn header(kvs: &[(&str, V)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        for (k, v) in kvs {
            s(&mut b, k);
            match v {
                V::U32(x) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(x.to_le_bytes());
                }
                V::Str(x) => {
                    b.extend(8u32.to_le_bytes());
                    s(&mut b, x);
                }
                V::Strs(xs) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(8u32.to_le_bytes());
                    b.extend((xs.len() as u64).to_le_bytes());
                    for x in xs.iter() {
                        s(&mut b, x);
                    }
                }
                V::I32s(xs) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(5u32.to_le_bytes());
                    b.extend((xs.len() as u64).to_le_bytes());
                    for x in xs.iter() {
                        b.extend(x.to_le_bytes());
                    }
                }
            }
        }
        b
    }

    /// A header shaped like SmolLM2's: llama, ChatML template, EOS = `<|im_end|>`.
    pub fn chatml_header() -> Vec<u8> {
        header(&[
            ("general.architecture", V::Str("llama")),
            ("general.name", V::Str("Tiny")),
            ("llama.context_length", V::U32(8192)),
            ("general.file_type", V::U32(3)),
            (
                "tokenizer.ggml.tokens",
                V::Strs(&["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b"]),
            ),
            ("tokenizer.ggml.token_type", V::I32s(&[3, 3, 3, 1, 1])),
            ("tokenizer.ggml.eos_token_id", V::U32(2)),
            (
                "tokenizer.chat_template",
                V::Str(
                    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
                     message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
                ),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn reads_architecture_context_and_quantisation() {
        let md = GgufMetadata::read(&chatml_header()[..], "t").unwrap();
        assert_eq!(md.architecture(), Some("llama"));
        assert_eq!(md.name(), Some("Tiny"));
        assert_eq!(md.context_length(), Some(8192));
        assert_eq!(md.file_type(), Some("Q4_1"));
        assert_eq!(md.tokens().unwrap().len(), 5);
    }

    #[test]
    fn stop_tokens_are_eos_end_of_text_and_end_of_turn() {
        // EOS is <|im_end|> (2); the grammar ends on <|endoftext|> (0).
        let md = GgufMetadata::read(&chatml_header()[..], "t").unwrap();
        assert_eq!(md.stop_token_ids(), vec![0, 2]);

        // A Llama-3-style template: EOS is <|end_of_text|>, the turn ends
        // with <|eot_id|>, and <|end_header_id|> must not become a stop token.
        let h = header(&[
            ("general.architecture", V::Str("llama")),
            (
                "tokenizer.ggml.tokens",
                V::Strs(&[
                    "<|begin_of_text|>",
                    "<|end_of_text|>",
                    "<|start_header_id|>",
                    "<|end_header_id|>",
                    "<|eot_id|>",
                ]),
            ),
            ("tokenizer.ggml.token_type", V::I32s(&[3, 3, 3, 3, 3])),
            ("tokenizer.ggml.eos_token_id", V::U32(1)),
            (
                "tokenizer.chat_template",
                V::Str(
                    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + \
                     '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}",
                ),
            ),
        ]);
        let md = GgufMetadata::read(&h[..], "t").unwrap();
        assert_eq!(md.stop_token_ids(), vec![1, 4]);
    }

    #[test]
    fn corrupt_files_are_errors_not_allocations() {
        assert!(matches!(
            GgufMetadata::read(&b"PK\x03\x04rest"[..], "t"),
            Err(GgufError::NotGguf { .. })
        ));
        let full = chatml_header();
        assert!(matches!(
            GgufMetadata::read(&full[..full.len() - 3], "t"),
            Err(GgufError::Corrupt { .. })
        ));
        let mut huge = b"GGUF".to_vec();
        huge.extend(3u32.to_le_bytes());
        huge.extend(0u64.to_le_bytes());
        huge.extend(1u64.to_le_bytes());
        huge.extend(u64::MAX.to_le_bytes()); // key length
        let err = GgufMetadata::read(&huge[..], "t").unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
