//! safetensors validation from the header alone: `u64` little-endian header
//! length, a JSON header that the `safetensors` crate's `Metadata` accepts
//! (offsets contiguous, sizes matching dtype × shape), and
//! `8 + header + data == file length`. The tensor data is never read, so a
//! 10 GiB shard costs one small read.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::Metadata;

use super::InvalidWeights;

/// Largest header accepted; the format's reference reader uses the same bound.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// What a valid safetensors file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsSummary {
    pub tensors: usize,
    pub data_bytes: u64,
}

/// Checks one safetensors file; `name` is how errors refer to it.
pub fn check_safetensors(path: &Path, name: &str) -> Result<SafetensorsSummary, InvalidWeights> {
    let invalid =
        |why: String| InvalidWeights(format!("{name} is not a valid safetensors file: {why}"));
    let mut file =
        std::fs::File::open(path).map_err(|e| invalid(format!("cannot open it ({e})")))?;
    let file_len = file.metadata().map_err(|e| invalid(e.to_string()))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| invalid(format!("it is only {file_len} bytes long")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(invalid(format!(
            "its header claims {header_len} bytes but the file is {file_len} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| invalid(e.to_string()))?;
    let metadata: Metadata = serde_json::from_slice(&header)
        .map_err(|e| invalid(format!("its header does not parse ({e})")))?;
    let data_bytes = metadata.data_len() as u64;
    if 8 + header_len + data_bytes != file_len {
        return Err(invalid(format!(
            "its header describes {} bytes but the file has {file_len}",
            8 + header_len + data_bytes
        )));
    }
    Ok(SafetensorsSummary {
        tensors: metadata.tensors().len(),
        data_bytes,
    })
}

/// Reads `model.safetensors.index.json` and returns the shard file names its
/// `weight_map` names, so the caller can check each is present and valid.
pub fn check_sharded_index(path: &Path) -> Result<BTreeSet<String>, InvalidWeights> {
    let invalid = |why: String| InvalidWeights(format!("model.safetensors.index.json {why}"));
    let text = std::fs::read(path).map_err(|e| invalid(format!("cannot be read ({e})")))?;
    let index: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("is not JSON ({e})")))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| invalid("has no weight_map object".into()))?;
    let shards: BTreeSet<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if shards.is_empty() {
        return Err(invalid("names no shard".into()));
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        file
    }

    fn safetensors(header: &str, data: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        bytes
    }

    const HEADER: &str = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;

    #[test]
    fn a_consistent_file_passes() {
        let file = file_with(&safetensors(HEADER, 16));
        let summary = check_safetensors(file.path(), "model.safetensors").unwrap();
        assert_eq!(
            summary,
            SafetensorsSummary {
                tensors: 1,
                data_bytes: 16
            }
        );
    }

    #[test]
    fn a_truncated_file_fails_naming_it() {
        let file = file_with(&safetensors(HEADER, 15));
        let err = check_safetensors(file.path(), "model.safetensors").unwrap_err();
        assert!(err.0.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn offsets_that_disagree_with_the_shape_fail() {
        let header = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#;
        let file = file_with(&safetensors(header, 12));
        assert!(check_safetensors(file.path(), "w.safetensors").is_err());
    }

    #[test]
    fn garbage_and_huge_headers_fail() {
        let file = file_with(b"not a safetensors file at all");
        assert!(check_safetensors(file.path(), "x").is_err());
        let file = file_with(&u64::MAX.to_le_bytes());
        assert!(check_safetensors(file.path(), "x").is_err());
    }

    #[test]
    fn the_index_lists_its_shards() {
        let file = file_with(
            br#"{"metadata":{},"weight_map":{"a":"m-1.safetensors","b":"m-2.safetensors","c":"m-1.safetensors"}}"#,
        );
        let shards = check_sharded_index(file.path()).unwrap();
        assert_eq!(
            shards.into_iter().collect::<Vec<_>>(),
            ["m-1.safetensors", "m-2.safetensors"]
        );
    }
}
