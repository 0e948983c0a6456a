//! Archives for the local upload tests, built in the tests: ZIP files
//! written with the zip crate (including the hostile kinds: traversal,
//! symlinks, encryption, bombs, too many entries), PyTorch checkpoints and
//! pickles written byte by byte, and the multipart bodies that carry them.

use std::io::{Cursor, Write};

use zip::write::{SimpleFileOptions, ZipWriter};
use zip::{CompressionMethod, unstable::write::FileOptionsExt};

pub use crate::support::fake_hub::safetensors_bytes;

/// A ZIP archive in memory, entry by entry.
pub struct Archive {
    writer: ZipWriter<Cursor<Vec<u8>>>,
}

impl Archive {
    pub fn new() -> Self {
        Self {
            writer: ZipWriter::new(Cursor::new(Vec::new())),
        }
    }

    /// A deflated file.
    pub fn file(self, name: &str, bytes: &[u8]) -> Self {
        self.with(name, bytes, deflated())
    }

    /// A stored (uncompressed) file.
    pub fn stored(self, name: &str, bytes: &[u8]) -> Self {
        self.with(name, bytes, stored())
    }

    pub fn dir(mut self, name: &str) -> Self {
        self.writer.add_directory(name, stored()).unwrap();
        self
    }

    /// A symbolic link entry (unix mode `S_IFLNK`).
    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.writer.add_symlink(name, target, stored()).unwrap();
        self
    }

    /// A file encrypted with ZipCrypto.
    pub fn encrypted(self, name: &str, bytes: &[u8]) -> Self {
        let options = deflated().with_deprecated_encryption(b"secret").unwrap();
        self.with(name, bytes, options)
    }

    /// A file written in 1 MiB pieces of zeros, `mib` of them: a deflate
    /// bomb for a large `mib`, without holding it in memory.
    pub fn zeros(mut self, name: &str, mib: usize) -> Self {
        let options = deflated().large_file(true);
        self.writer.start_file(name, options).unwrap();
        let piece = vec![0u8; 1 << 20];
        for _ in 0..mib {
            self.writer.write_all(&piece).unwrap();
        }
        self
    }

    fn with(mut self, name: &str, bytes: &[u8], options: SimpleFileOptions) -> Self {
        self.writer.start_file(name, options).unwrap();
        self.writer.write_all(bytes).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.writer.finish().unwrap().into_inner()
    }
}

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

fn stored() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Stored)
}

/// A small valid safetensors file.
pub fn safetensors() -> Vec<u8> {
    safetensors_bytes(&[("weight", &[4, 4]), ("bias", &[4])])
}

/// A checkpoint as `torch.save({"weight": tensor}, …)` writes it: a ZIP
/// holding `archive/data.pkl` (protocol 2: an `OrderedDict` whose value is
/// rebuilt by `torch._utils._rebuild_tensor_v2` from a persistent-id
/// storage `('storage', torch.FloatStorage, '0', 'cpu', n)`), the storage
/// bytes in `archive/data/0`, `archive/version` and `archive/byteorder`.
pub fn torch_checkpoint(values: &[f32]) -> Vec<u8> {
    let storage: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Archive::new()
        .stored("archive/data.pkl", &tensor_pickle(values.len()))
        .stored("archive/byteorder", b"little")
        .stored("archive/data/0", &storage)
        .stored("archive/version", b"3\n")
        .finish()
}

fn tensor_pickle(n: usize) -> Vec<u8> {
    let n = u8::try_from(n).expect("a small tensor");
    let mut p = vec![0x80, 2];
    p.extend(global("collections", "OrderedDict"));
    p.extend_from_slice(b")R");
    p.extend(unicode("weight"));
    p.extend(global("torch._utils", "_rebuild_tensor_v2"));
    p.push(b'('); // the arguments of _rebuild_tensor_v2
    p.push(b'('); // the persistent id of the storage
    p.extend(unicode("storage"));
    p.extend(global("torch", "FloatStorage"));
    p.extend(unicode("0"));
    p.extend(unicode("cpu"));
    p.extend_from_slice(&[b'K', n]);
    p.extend_from_slice(b"tQ"); // TUPLE, BINPERSID
    p.extend_from_slice(&[b'K', 0]); // storage offset
    p.extend_from_slice(&[b'K', n, 0x85]); // size (n,)
    p.extend_from_slice(&[b'K', 1, 0x85]); // stride (1,)
    p.push(0x89); // requires_grad = False
    p.extend(global("collections", "OrderedDict"));
    p.extend_from_slice(b")R"); // backward hooks
    p.extend_from_slice(b"tRs."); // TUPLE, REDUCE, SETITEM, STOP
    p
}

/// A pickle that would run `module.name("echo pwned")` when loaded.
pub fn pickle_calling(module: &str, name: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(global(module, name));
    p.extend(unicode("echo pwned"));
    p.extend_from_slice(&[0x85, b'R', b'.']);
    p
}

fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

fn unicode(text: &str) -> Vec<u8> {
    let mut bytes = vec![b'X'];
    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

pub const BOUNDARY: &str = "vectorize-test-boundary-7f3a";

/// The content type of the multipart bodies below.
pub fn multipart_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The part of a multipart body before the bytes of the file field.
pub fn multipart_head(file_name: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"{file_name}\"\r\nContent-Type: application/zip\r\n\r\n"
    )
    .into_bytes()
}

/// The part of a multipart body after the bytes of the file field.
pub fn multipart_tail() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

/// A whole multipart body with `bytes` as the file field `file_name`.
pub fn multipart_body(file_name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = multipart_head(file_name);
    body.extend_from_slice(bytes);
    body.extend(multipart_tail());
    body
}
