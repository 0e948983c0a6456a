//! The test suite's fake Hugging Face Hub as a standalone server, for
//! checks that need real outside programs on both ends: `.ci/interop.sh`
//! points the real `vectorize serve` and Python's `huggingface_hub` at it,
//! and the README's example session was recorded against it. It publishes
//! one model repository whose tensors follow a rule the checks can
//! recompute, prints the hub's URL as its first line on stdout, writes a
//! manifest of what it serves, and runs until it is killed.
//!
//! ```sh
//! cargo run --example fake_hub -- --manifest hub.json --revision main --revision v1.0
//! ```
//!
//! The manifest: `{"url", "repo_id", "commit", "revisions", "files":
//! [{"path", "sha256", "size", "lfs"}], "tensors": {file: {name: {"dtype",
//! "shape", "seed"}}}}`. Every tensor holds, at flat index `i`, with
//! `k = i + seed`: F32 `(k * 7919 % 1000) / 8 - 60`, I64 `k * 3 - 5`,
//! U8 `k * 37 % 256` — values exact in their type, different in every
//! tensor, so a read at a wrong offset or of a wrong file shows.

#[path = "../tests/api/support/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

use std::path::PathBuf;

use clap::Parser;
use fake_hub::{FakeHub, HubFile, HubRepo, random_commit};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(about = "The fake Hugging Face Hub of the tests, serving one model")]
struct Args {
    /// The repository's id.
    #[arg(long, default_value = "acme/tiny-bert")]
    repo: String,
    /// A branch or tag that resolves to the repository's commit; repeat
    /// for several. Default: main.
    #[arg(long)]
    revision: Vec<String>,
    /// Size of the main weights tensor in MiB (a demo wants something a
    /// bar can show); default a few KiB.
    #[arg(long, default_value_t = 0)]
    weights_mib: usize,
    /// Throttle file bodies to about this many bytes a second (0: none).
    #[arg(long, default_value_t = 0)]
    bytes_per_sec: u64,
    /// Where to write the manifest of what is served.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

/// One tensor: its name, dtype, shape and the seed of its values.
struct TensorSpec {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<usize>,
    seed: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let revisions = match args.revision.is_empty() {
        true => vec!["main".to_string()],
        false => args.revision.clone(),
    };
    let vocab = (args.weights_mib * 1024 * 1024 / 4 / 32).max(64);
    let weights = [
        spec("embeddings.weight", "F32", &[vocab, 32], 0),
        spec("encoder.layer.0.bias", "F32", &[32], 11),
        spec("position_ids", "I64", &[1, 16], 23),
        spec("token_type_ids", "U8", &[4, 3], 42),
    ];
    let dense = [spec("linear.weight", "F32", &[8, 4], 97)];
    let files = vec![
        regular(
            "config.json",
            br#"{"model_type": "bert", "hidden_size": 32}"#,
        ),
        regular("tokenizer.json", br#"{"version": "1.0", "model": {}}"#),
        regular(
            "README.md",
            b"# tiny-bert\n\nA model for the interop checks.\n",
        ),
        lfs("model.safetensors", safetensors(&weights)),
        regular(
            "2_Dense/config.json",
            br#"{"in_features": 8, "out_features": 4}"#,
        ),
        lfs("2_Dense/model.safetensors", safetensors(&dense)),
    ];
    let commit = random_commit();
    let manifest = json!({
        "repo_id": args.repo,
        "commit": commit,
        "revisions": revisions,
        "files": files.iter().map(|f| json!({
            "path": f.path,
            "sha256": hex::encode(Sha256::digest(&f.bytes)),
            "size": f.bytes.len(),
            "lfs": f.lfs,
        })).collect::<Vec<_>>(),
        "tensors": {
            "model.safetensors": describe(&weights),
            "2_Dense/model.safetensors": describe(&dense),
        },
    });

    let hub = FakeHub::start().await;
    hub.add_repo(HubRepo {
        id: args.repo.clone(),
        commit,
        revisions,
        files,
        ..Default::default()
    });
    hub.slow_downloads(args.bytes_per_sec);
    if let Some(path) = &args.manifest {
        let mut manifest = manifest;
        manifest["url"] = json!(hub.url());
        let text = serde_json::to_string_pretty(&manifest).expect("JSON serializes");
        std::fs::write(path, text).expect("the manifest can be written");
    }
    println!("{}", hub.url());
    tokio::signal::ctrl_c()
        .await
        .expect("Ctrl-C can be watched");
}

fn spec(name: &'static str, dtype: &'static str, shape: &[usize], seed: u64) -> TensorSpec {
    TensorSpec {
        name,
        dtype,
        shape: shape.to_vec(),
        seed,
    }
}

fn regular(path: &str, bytes: &[u8]) -> HubFile {
    HubFile {
        path: path.into(),
        bytes: bytes.to_vec(),
        lfs: false,
    }
}

fn lfs(path: &str, bytes: Vec<u8>) -> HubFile {
    HubFile {
        path: path.into(),
        bytes,
        lfs: true,
    }
}

fn describe(tensors: &[TensorSpec]) -> Value {
    let entries = tensors.iter().map(|t| {
        let spec = json!({"dtype": t.dtype, "shape": t.shape, "seed": t.seed});
        (t.name.to_string(), spec)
    });
    Value::Object(entries.collect())
}

/// The bytes of element `i` of a tensor, by the rule in the module docs.
fn element(dtype: &str, k: u64) -> Vec<u8> {
    match dtype {
        "F32" => ((k * 7919 % 1000) as f32 / 8.0 - 60.0)
            .to_le_bytes()
            .to_vec(),
        "I64" => (k as i64 * 3 - 5).to_le_bytes().to_vec(),
        "U8" => vec![(k * 37 % 256) as u8],
        other => panic!("no rule for dtype {other}"),
    }
}

/// A safetensors file of `tensors`, in order, header padded to 8 bytes.
fn safetensors(tensors: &[TensorSpec]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut data = Vec::new();
    for t in tensors {
        let start = data.len();
        let count: usize = t.shape.iter().product();
        for i in 0..count as u64 {
            data.extend(element(t.dtype, i + t.seed));
        }
        let entry =
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [start, data.len()]});
        header.insert(t.name.into(), entry);
    }
    let mut header = Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    file
}
