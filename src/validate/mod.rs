//! Reads weights and archives without trusting them: safetensors headers
//! checked against the file's length (`safetensors`), pickles found in any
//! stored file by its content and held, opcode by opcode, to what torch's
//! `weights_only` loader accepts (`pickle`), and the entry count a ZIP
//! declares before a ZIP reader parses it (`zip_directory`).
//! Nothing here executes or loads a model, and nothing here writes.

pub mod pickle;
pub mod safetensors;
pub mod zip_directory;

pub use self::safetensors::{SafetensorsSummary, check_safetensors, check_sharded_index};

/// Why a weights file is not acceptable; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidWeights(pub String);
