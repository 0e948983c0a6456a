//! PyTorch checkpoints checked without executing them. A pickle stream is
//! read opcode by opcode (protocols 0–5) and never run; every global it
//! names (`GLOBAL`, `INST`, `STACK_GLOBAL`) is collected, and the stream is
//! accepted only when each one is something a plain tensor checkpoint needs.
//! `torch.save` files are ZIP archives holding `*/data.pkl`; older ones and
//! bare pickles are a sequence of pickles followed by raw storage bytes.

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use super::InvalidWeights;

/// Largest pickle scanned; a tensor checkpoint's pickle is small (the
/// tensor bytes live elsewhere).
const MAX_PICKLE_BYTES: u64 = 1 << 30;
/// Most entries a `torch.save` ZIP may declare: it holds one per tensor
/// storage plus a few, and parsing allocates per declared entry.
const MAX_CHECKPOINT_ENTRIES: u64 = 100_000;

/// Checks a `.bin`/`.pt`/`.pth` file: a `torch.save` ZIP or a bare pickle.
pub fn check_checkpoint(path: &Path, name: &str) -> Result<(), InvalidWeights> {
    let invalid =
        |why: String| InvalidWeights(format!("{name} is not a safe PyTorch checkpoint: {why}"));
    let mut file =
        std::fs::File::open(path).map_err(|e| invalid(format!("cannot open it ({e})")))?;
    let mut magic = [0u8; 4];
    let is_zip = file.read_exact(&mut magic).is_ok() && &magic == b"PK\x03\x04";
    file.rewind().map_err(|e| invalid(e.to_string()))?;
    if is_zip {
        let declared = super::zip_directory::declared_entry_count(&mut file)
            .map_err(|e| invalid(e.to_string()))?;
        if declared > MAX_CHECKPOINT_ENTRIES {
            return Err(invalid(format!("its ZIP declares {declared} entries")));
        }
        file.rewind().map_err(|e| invalid(e.to_string()))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| invalid(format!("unreadable ZIP ({e})")))?;
        let pickles: Vec<String> = archive
            .file_names()
            .filter_map(Result::ok)
            .filter(|n| n.ends_with("/data.pkl") || n == "data.pkl")
            .map(|n| n.into_owned())
            .collect();
        if pickles.is_empty() {
            return Err(invalid("the ZIP holds no data.pkl".into()));
        }
        for entry_name in pickles {
            let entry = archive
                .by_name(&entry_name)
                .map_err(|e| invalid(e.to_string()))?;
            scan_pickles(entry.take(MAX_PICKLE_BYTES))
                .map_err(|why| invalid(format!("{entry_name}: {why}")))?;
        }
        Ok(())
    } else {
        scan_pickles(file.take(MAX_PICKLE_BYTES)).map_err(invalid)
    }
}

/// Scans one pickle, then any pickles that follow it (the legacy format
/// writes several before the raw storage bytes).
pub fn scan_pickles(input: impl Read) -> Result<(), String> {
    let mut scanner = Scanner {
        input: BufReader::new(input).bytes(),
        offset: 0,
        pushes: Vec::new(),
        memo: HashMap::new(),
        legacy_magic: false,
    };
    scanner.scan_one()?;
    if scanner.legacy_magic {
        // torch's legacy format: `torch.load` unpickles the magic number,
        // then four more pickles whatever their first byte, then raw bytes.
        for _ in 0..LEGACY_PICKLES - 1 {
            scanner.scan_one()?;
        }
        return Ok(());
    }
    while scanner.peek_is_proto()? {
        scanner.scan_one()?;
    }
    Ok(())
}

/// Whether a global is one a tensor checkpoint needs.
pub fn is_allowed_global(module: &str, name: &str) -> bool {
    const DTYPES: &[&str] = &[
        "float16",
        "float32",
        "float64",
        "bfloat16",
        "half",
        "float",
        "double",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
        "complex32",
        "complex64",
        "complex128",
        "float8_e4m3fn",
        "float8_e5m2",
        "qint8",
        "quint8",
        "qint32",
        "long",
        "int",
        "short",
    ];
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
                | "_rebuild_from_type_v2"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.storage" => matches!(name, "_load_from_bytes" | "UntypedStorage" | "TypedStorage"),
        "torch" => {
            name == "Size"
                || name.ends_with("Storage") && name.chars().all(|c| c.is_ascii_alphanumeric())
                || DTYPES.contains(&name)
        }
        "builtins" | "__builtin__" => matches!(
            name,
            "set" | "frozenset" | "dict" | "list" | "tuple" | "bytearray"
        ),
        "_codecs" => name == "encode",
        _ => false,
    }
}

struct Scanner<I> {
    input: I,
    offset: u64,
    /// What each opcode pushed, in order: `Some` for a string, `None` for
    /// anything else. `STACK_GLOBAL` takes its module and name from the last two.
    pushes: Vec<Option<String>>,
    /// The memo of the pickle being read, as Python keeps it (a dict: `PUT`
    /// overwrites, `MEMOIZE` stores at its current length), as far as strings go.
    memo: HashMap<u64, Option<String>>,
    /// The first pickle was torch's legacy magic number.
    legacy_magic: bool,
}

/// torch's legacy serialization magic number, 0x1950a86a20f9469cfc6c, as
/// `LONG1` writes it (little-endian) and as protocols 0 and 1 write it.
const LEGACY_MAGIC_LE: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_MAGIC_TEXT: &str = "119547037146038801333356";
/// Pickles a legacy `torch.save` file starts with: magic number, protocol
/// version, system info, the object, the storage keys.
const LEGACY_PICKLES: usize = 5;

impl<I: Iterator<Item = std::io::Result<u8>>> Scanner<I> {
    fn byte(&mut self) -> Result<u8, String> {
        self.offset += 1;
        match self.input.next() {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(format!("read error at byte {}: {e}", self.offset)),
            None => Err(format!("the pickle ends early, at byte {}", self.offset)),
        }
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if n > MAX_PICKLE_BYTES {
            return Err(format!("an argument of {n} bytes at byte {}", self.offset));
        }
        (0..n).map(|_| self.byte()).collect()
    }

    fn uint(&mut self, n: u64) -> Result<u64, String> {
        let bytes = self.bytes(n)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        loop {
            match self.byte()? {
                b'\n' => {
                    return Ok(String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string());
                }
                b => line.push(b),
            }
            if line.len() > 1 << 16 {
                return Err(format!("a line longer than 64 KiB at byte {}", self.offset));
            }
        }
    }

    fn peek_is_proto(&mut self) -> Result<bool, String> {
        match self.input.next() {
            None => Ok(false),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(0x80)) => {
                // Put the PROTO back by handling it here.
                self.offset += 1;
                self.byte()?;
                Ok(true)
            }
            Some(Ok(_)) => Ok(false), // raw storage bytes follow the pickles
        }
    }

    fn push_string(&mut self, s: Vec<u8>) {
        self.pushes
            .push(Some(String::from_utf8_lossy(&s).into_owned()));
    }

    fn check_global(&self, module: &str, name: &str) -> Result<(), String> {
        if is_allowed_global(module, name) {
            Ok(())
        } else {
            Err(format!(
                "it imports {module}.{name}, which a tensor checkpoint does not need and which could run code when loaded"
            ))
        }
    }

    fn memoize(&mut self, index: u64) {
        let top = self.pushes.last().cloned().flatten();
        self.memo.insert(index, top);
    }

    fn memo_get(&mut self, index: u64) {
        let value = self.memo.get(&index).cloned().flatten();
        self.pushes.push(value);
    }

    /// Reads one pickle, opcodes up to and including STOP, with a memo and
    /// stack of its own as `pickle.load` has.
    fn scan_one(&mut self) -> Result<(), String> {
        self.memo.clear();
        self.pushes.clear();
        let first_pickle = self.offset == 0;
        loop {
            let at = self.offset;
            let op = self.byte()?;
            match op {
                b'.' => return Ok(()),
                // No argument, no value worth tracking.
                b'(' | b'0' | b'1' | b'2' | b'a' | b'e' | b'b' | b'd' | b'l' | b't' | 0x85
                | 0x86 | 0x87 | b's' | b'u' | b'R' | 0x81 | 0x92 | b'o' | b'Q' | 0x90 | 0x91
                | 0x97 | 0x98 => self.pushes.push(None),
                b'N' | 0x88 | 0x89 | b'}' | b']' | b')' | 0x8f => self.pushes.push(None),
                0x94 => {
                    let index = self.memo.len() as u64;
                    self.memoize(index);
                }
                0x93 => {
                    let n = self.pushes.len();
                    let (module, name) = match (n >= 2)
                        .then(|| (self.pushes[n - 2].clone(), self.pushes[n - 1].clone()))
                    {
                        Some((Some(module), Some(name))) => (module, name),
                        _ => {
                            return Err(format!(
                                "STACK_GLOBAL at byte {at} takes a name that is not a plain string"
                            ));
                        }
                    };
                    self.check_global(&module, &name)?;
                    self.pushes.push(None);
                }
                // Newline-terminated arguments.
                b'I' | b'L' | b'F' | b'P' => {
                    let text = self.line()?;
                    if first_pickle && text.trim_end_matches('L') == LEGACY_MAGIC_TEXT {
                        self.legacy_magic = true;
                    }
                    self.pushes.push(None);
                }
                b'S' | b'V' => {
                    let text = self.line()?;
                    let text = text.trim_matches(|c| c == '\'' || c == '"').to_string();
                    self.push_string(text.into_bytes());
                }
                b'g' => {
                    let index = self
                        .line()?
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad GET at byte {at}"))?;
                    self.memo_get(index);
                }
                b'p' => {
                    let index = self
                        .line()?
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad PUT at byte {at}"))?;
                    self.memoize(index);
                }
                b'c' | b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.check_global(&module, &name)?;
                    self.pushes.push(None);
                }
                // Fixed-size arguments.
                b'J' => self.skip_push(4)?,
                b'K' => self.skip_push(1)?,
                b'M' => self.skip_push(2)?,
                b'G' => self.skip_push(8)?,
                b'h' => {
                    let index = self.uint(1)?;
                    self.memo_get(index);
                }
                b'j' => {
                    let index = self.uint(4)?;
                    self.memo_get(index);
                }
                b'q' => {
                    let index = self.uint(1)?;
                    self.memoize(index);
                }
                b'r' => {
                    let index = self.uint(4)?;
                    self.memoize(index);
                }
                0x80 => {
                    let protocol = self.byte()?;
                    if protocol > 5 {
                        return Err(format!("pickle protocol {protocol} is not supported"));
                    }
                }
                0x95 => {
                    self.bytes(8)?;
                }
                0x82..=0x84 => {
                    return Err(format!(
                        "it imports a global through the extension registry (byte {at})"
                    ));
                }
                // Length-prefixed arguments.
                b'T' | b'X' => {
                    let n = self.uint(4)?;
                    let s = self.bytes(n)?;
                    self.push_string(s);
                }
                b'U' | 0x8c => {
                    let n = self.uint(1)?;
                    let s = self.bytes(n)?;
                    self.push_string(s);
                }
                0x8d => {
                    let n = self.uint(8)?;
                    let s = self.bytes(n)?;
                    self.push_string(s);
                }
                b'B' | 0x8b => {
                    let n = self.uint(4)?;
                    self.skip_push(n)?;
                }
                b'C' => {
                    let n = self.uint(1)?;
                    self.skip_push(n)?;
                }
                0x8a => {
                    let n = self.uint(1)?;
                    let long = self.bytes(n)?;
                    self.legacy_magic |= first_pickle && long == LEGACY_MAGIC_LE;
                    self.pushes.push(None);
                }
                0x8e | 0x96 => {
                    let n = self.uint(8)?;
                    self.skip_push(n)?;
                }
                other => {
                    return Err(format!(
                        "not a pickle stream: unknown opcode 0x{other:02x} at byte {at}"
                    ));
                }
            }
        }
    }

    fn skip_push(&mut self, n: u64) -> Result<(), String> {
        for _ in 0..n {
            self.byte()?;
        }
        self.pushes.push(None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> Result<(), String> {
        scan_pickles(bytes)
    }

    /// `pickle.dumps(OrderedDict(), protocol=2)`-style stream naming `module.name` with GLOBAL.
    fn global(module: &str, name: &str) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'c'];
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        p.extend_from_slice(b")R.");
        p
    }

    /// The same with STACK_GLOBAL (protocol 4), strings memoized and fetched back.
    fn stack_global(module: &str, name: &str) -> Vec<u8> {
        let mut p = vec![0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0];
        p.push(0x8c);
        p.push(module.len() as u8);
        p.extend_from_slice(module.as_bytes());
        p.push(0x94);
        p.push(0x8c);
        p.push(name.len() as u8);
        p.extend_from_slice(name.as_bytes());
        p.push(0x94);
        p.extend_from_slice(&[b'h', 0, b'h', 1, 0x93, b')', b'R', b'.']);
        p
    }

    #[test]
    fn tensor_globals_pass() {
        assert!(scan(&global("collections", "OrderedDict")).is_ok());
        assert!(scan(&global("torch._utils", "_rebuild_tensor_v2")).is_ok());
        assert!(scan(&stack_global("torch", "FloatStorage")).is_ok());
        assert!(scan(&stack_global("torch", "bfloat16")).is_ok());
    }

    #[test]
    fn code_execution_globals_fail_naming_them() {
        for (module, name) in [
            ("os", "system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("subprocess", "Popen"),
            ("__builtin__", "getattr"),
        ] {
            for stream in [global(module, name), stack_global(module, name)] {
                let err = scan(&stream).unwrap_err();
                assert!(err.contains(&format!("{module}.{name}")), "{err}");
            }
        }
    }

    #[test]
    fn garbage_and_truncation_fail() {
        assert!(scan(b"hello world").is_err());
        assert!(scan(&[0x80, 2, b'c', b'o', b's']).is_err());
        assert!(scan(&[0x80, 2, 0x82, 1, b'.']).is_err());
    }

    #[test]
    fn a_memo_index_that_python_counts_differently_cannot_hide_a_global() {
        // "x" PUT 0 twice: Python's memo has one entry, so the MEMOIZEs that
        // follow store at 1, 2, 3, 4 — the scanner must count the same way.
        let mut p = vec![0x80, 4, 0x8c, 1, b'x', b'q', 0, b'q', 0];
        for s in ["collections", "os", "OrderedDict", "system"] {
            p.push(0x8c);
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
            p.push(0x94);
        }
        p.extend_from_slice(&[b'h', 2, b'h', 4, 0x93, b')', b'R', b'.']);
        let err = scan(&p).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn every_pickle_of_a_legacy_torch_file_is_scanned() {
        let magic = [
            0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
        ];
        let mut stream = magic.to_vec();
        stream.extend_from_slice(b"cposix\nsystem\n(S'id'\ntR.");
        let err = scan(&stream).unwrap_err();
        assert!(err.contains("posix.system"), "{err}");
        let mut benign = magic.to_vec();
        for _ in 0..4 {
            benign.extend(global("collections", "OrderedDict"));
        }
        benign.extend_from_slice(b"\x00raw storage");
        assert!(scan(&benign).is_ok());
    }

    #[test]
    fn legacy_streams_of_several_pickles_are_all_scanned() {
        let mut stream = global("collections", "OrderedDict");
        stream.extend(global("os", "system"));
        assert!(scan(&stream).is_err());
        let mut stream = global("collections", "OrderedDict");
        stream.extend_from_slice(b"\x00\x01raw storage bytes");
        assert!(scan(&stream).is_ok());
    }
}
