//! One pickle, read as CPython's unpickler reads it but never run. Every
//! opcode of protocols 0–5 is decoded and its effect on the stack, the marks
//! and the memo is followed with abstract values (a string's first bytes,
//! which allowed global an object came from, a container's kind), within a
//! fixed memory budget and in one pass, so time is linear in the input.
//!
//! Two modes. `Strict` holds the stream to what torch's `weights_only`
//! unpickler accepts: its opcodes only, `REDUCE`/`NEWOBJ` only on allowed
//! globals, `BUILD` only on what they built, and anything the scan cannot
//! follow (a truncated stream, an unknown opcode, a memo index never set,
//! a value past the budget) is unsafe. `Sniff` reads bytes that may not be a
//! pickle at all: as long as Python's loader would raise before importing
//! anything, nothing can run and the bytes are not a pickle; once an import
//! is reached (or a `STOP`, a complete pickle), the stream is held to the
//! strict rule from its first byte.

use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use super::allow::{Kind, allowed};
use super::input::{Argument, Input, Short};

/// Memory the abstract stack, marks and memo may hold (the buffers and the
/// kept bytes of strings are counted; the rest of the 64 MiB is headroom).
const BUDGET_BYTES: usize = 32 << 20;
/// Cost of one value on the stack or in the memo, allocator slack included.
const VALUE_COST: usize = 64;
/// What a memo entry costs beyond its value: its slot in the map, and the
/// old table the map keeps while it grows.
const MEMO_SLOT_COST: usize = 64;
/// Longest string or bytes argument a checkpoint's pickle may hold: the
/// tensor data lives outside the pickle, so its strings are names.
const MAX_ARGUMENT_BYTES: u64 = 64 << 20;

/// How a stream is held to the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Sniff,
}

/// How reading one pickle ended, when it did not end unsafe.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A `STOP` was reached and everything before it is allowed.
    Stop { legacy_magic: bool },
    /// Sniff mode: Python would raise here before importing anything.
    NotAPickle,
}

/// What a stack slot holds, as far as the rule needs to know.
#[derive(Debug, Clone)]
enum Value {
    /// A text or byte string, with its first bytes.
    Str(Rc<Argument>),
    /// An allowed global itself.
    Global(Kind),
    /// What calling or instantiating an allowed global returned.
    Object(Kind),
    List,
    Dict,
    Set,
    Tuple,
    /// A number, `None`, a bool, bytes.
    Scalar,
    /// Anything: what a loader's `persistent_load` returned (torch's legacy
    /// loader returns strings for some ids), or a memo entry the scan could
    /// not follow. Treated as a string and as a callable alike.
    Unknown,
}

impl Value {
    fn cost(&self) -> usize {
        match self {
            // The `Rc` box and the kept bytes' own allocation.
            Value::Str(arg) => 2 * VALUE_COST + arg.kept.len(),
            _ => VALUE_COST,
        }
    }
}

/// Why reading stopped early.
enum Halt {
    /// Python's loader raises here (sniff mode, before any import).
    Raise,
    /// Unsafe, with the reason.
    Unsafe(String),
}

/// The reusable state of the reader: allocations survive from one pickle to
/// the next, contents do not.
#[derive(Default)]
pub struct Machine {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    live: usize,
}

impl Machine {
    /// Reads one pickle from `input`, up to and including its `STOP`.
    /// `first` marks the first pickle of a stream: the only one whose memo
    /// surely starts empty (an `Unpickler` that loads again keeps its memo),
    /// and where torch's legacy magic number may stand. `Err` carries the
    /// reason it is unsafe.
    pub fn read_one<R: Read>(
        &mut self,
        input: &mut Input<R>,
        mode: Mode,
        first: bool,
    ) -> Result<Ending, String> {
        self.stack.clear();
        self.marks.clear();
        // Clearing a map costs its capacity: a large one is dropped instead,
        // so that many small pickles after a big one stay linear.
        if self.memo.capacity() > 1024 {
            self.memo = HashMap::new();
        } else {
            self.memo.clear();
        }
        self.live = 0;
        let start = input.offset();
        let mut run = Run {
            machine: self,
            input,
            strict: mode == Mode::Strict,
            pending: None,
            memo_uncertain: false,
            first,
            legacy_magic: false,
            at: start,
        };
        match run.read() {
            Ok(()) => Ok(Ending::Stop {
                legacy_magic: run.legacy_magic,
            }),
            // Only sniffed bytes raise: strict reads turn errors into reasons.
            Err(Halt::Raise) => Ok(Ending::NotAPickle),
            Err(Halt::Unsafe(reason)) => Err(reason),
        }
    }
}

struct Run<'a, R> {
    machine: &'a mut Machine,
    input: &'a mut Input<R>,
    /// Held to the strict rule (from the start, or since an import).
    strict: bool,
    /// Sniff mode: the first thing seen that the strict rule refuses.
    pending: Option<String>,
    /// A text `PUT` the scan could not read as Python would: a memo index
    /// that seems unset may be set, so a miss is no longer a certain error.
    memo_uncertain: bool,
    first: bool,
    legacy_magic: bool,
    /// Offset of the opcode being read.
    at: u64,
}

/// Opcodes torch's `weights_only` unpickler reads (torch 2.10.0,
/// `_weights_only_unpickler.py`): no `STACK_GLOBAL`, `INST`, `OBJ`, `EXT*`,
/// text opcodes, `MEMOIZE` or `FRAME`.
const TORCH_OPCODES: &[u8] = b"cR\x81baesu(t\x85\x86\x87N\x89\x88)]}\x8fJKMGXUQhjqr\x8a\x80.";

impl<R: Read> Run<'_, R> {
    /// Python raises here: unsafe under the strict rule, "not a pickle" otherwise.
    fn fail(&self, what: &str) -> Halt {
        match (&self.pending, self.strict) {
            (Some(refused), true) => Halt::Unsafe(refused.clone()),
            (None, true) => Halt::Unsafe(format!("{what} at byte {}", self.at)),
            (_, false) => Halt::Raise,
        }
    }

    fn short(&self, e: Short) -> Halt {
        match e {
            Short::End => self.fail("the pickle ends early"),
            Short::FrameEnd => Halt::Unsafe(format!(
                "an argument runs past the end of its FRAME (byte {}), where Python's \
                 reader and a plain reading of the bytes part ways",
                self.at
            )),
            Short::Io(e) => Halt::Unsafe(format!("it cannot be read ({e})")),
        }
    }

    /// Something torch's loader refuses. Reading goes on, so that a global
    /// named later can be named in the reason; the pickle is unsafe at its
    /// end or at its first import, and sniffed bytes that turn out to be no
    /// pickle were never a threat.
    fn refuse(&mut self, what: String) {
        self.pending.get_or_insert(what);
    }

    /// The bytes are a pickle (an import or a `STOP` was reached): held to
    /// the strict rule from their first byte.
    fn is_a_pickle(&mut self) -> Result<(), Halt> {
        if let Some(reason) = self.pending.take() {
            return Err(Halt::Unsafe(reason));
        }
        self.strict = true;
        Ok(())
    }

    fn opcode_refused(&mut self, op: u8) {
        if !TORCH_OPCODES.contains(&op) {
            let what = format!(
                "it uses the opcode {} (byte {}), which torch.load(weights_only=True) refuses",
                named(op),
                self.at
            );
            self.refuse(what);
        }
    }

    fn push(&mut self, value: Value) -> Result<(), Halt> {
        self.machine.live += value.cost();
        self.machine.stack.push(value);
        self.within_budget()
    }

    /// Past the budget the scan cannot follow the pickle: unsafe, for the
    /// first refused thing when there was one.
    fn within_budget(&self) -> Result<(), Halt> {
        if self.machine.live > BUDGET_BYTES {
            if let Some(refused) = &self.pending {
                return Err(Halt::Unsafe(refused.clone()));
            }
            return Err(Halt::Unsafe(format!(
                "it holds more than {} MiB of values at once (byte {}); a tensor \
                 checkpoint's pickle is far smaller",
                BUDGET_BYTES >> 20,
                self.at
            )));
        }
        Ok(())
    }

    fn fence(&self) -> usize {
        self.machine.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value, Halt> {
        if self.machine.stack.len() <= self.fence() {
            return Err(self.fail("stack underflow"));
        }
        let value = self.machine.stack.pop().expect("above the fence");
        self.machine.live -= value.cost();
        Ok(value)
    }

    fn top(&self) -> Result<&Value, Halt> {
        if self.machine.stack.len() <= self.fence() {
            return Err(self.fail("stack underflow"));
        }
        Ok(self.machine.stack.last().expect("above the fence"))
    }

    /// Pops everything down to the last mark; returns how many values and the first.
    fn pop_mark(&mut self) -> Result<(usize, Option<Value>), Halt> {
        let Some(mark) = self.machine.marks.pop() else {
            return Err(self.fail("no MARK to pop to"));
        };
        self.machine.live -= VALUE_COST;
        let popped = &self.machine.stack[mark..];
        let (count, first) = (popped.len(), popped.first().cloned());
        self.machine.live -= popped.iter().map(Value::cost).sum::<usize>();
        self.machine.stack.truncate(mark);
        Ok((count, first))
    }

    fn memo_put(&mut self, index: u64) -> Result<(), Halt> {
        let value = self.top()?.clone();
        self.machine.live += value.cost() + MEMO_SLOT_COST;
        if let Some(old) = self.machine.memo.insert(index, value) {
            self.machine.live -= old.cost() + MEMO_SLOT_COST;
        }
        self.within_budget()
    }

    /// Pushes a memo entry. Once a `PUT` could not be followed, any entry
    /// may hold anything; after the first pickle of a stream, one this
    /// pickle never set may be an earlier pickle's.
    fn memo_get(&mut self, index: Option<u64>) -> Result<(), Halt> {
        if self.memo_uncertain {
            return self.push(Value::Unknown);
        }
        match index.and_then(|i| self.machine.memo.get(&i).cloned()) {
            Some(value) => self.push(value),
            None if index.is_none() || !self.first && !self.strict => self.push(Value::Unknown),
            None => Err(self.fail(&format!(
                "memo index {} was never set",
                index.unwrap_or_default()
            ))),
        }
    }

    fn line(&mut self) -> Result<Argument, Halt> {
        self.input.line().map_err(|e| self.short(e))
    }

    fn uint(&mut self, n: usize) -> Result<u64, Halt> {
        self.input.uint(n).map_err(|e| self.short(e))
    }

    /// A counted argument: its length in `len_bytes` bytes, then the bytes.
    fn counted(&mut self, len_bytes: usize, signed: bool) -> Result<Argument, Halt> {
        let n = self.uint(len_bytes)?;
        let negative = signed && (n >> (8 * len_bytes - 1)) & 1 == 1;
        if negative || n > i64::MAX as u64 || self.input.exceeds_remaining(n) {
            return Err(self.fail(&format!(
                "an argument of {n} bytes past the end of the stream"
            )));
        }
        if self.strict && n > MAX_ARGUMENT_BYTES {
            return Err(Halt::Unsafe(format!(
                "it declares a string of {n} bytes at byte {}; a tensor checkpoint's \
                 pickle holds names, not data",
                self.at
            )));
        }
        self.input.counted(n).map_err(|e| self.short(e))
    }

    /// A text memo index (`GET`, `PUT`): `None` when the scan cannot be
    /// sure how Python's `PyLong_FromString` reads it. A line holding only
    /// its newline is an error in Python before anything else.
    fn text_index(&mut self) -> Result<Option<u64>, Halt> {
        let line = self.line()?;
        if line.len == 0 {
            return Err(self.fail("an empty memo index"));
        }
        let text = String::from_utf8_lossy(&line.kept);
        let digits = text.trim_matches([' ', '\t', '\r', '\x0b', '\x0c']);
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        let plain = digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty();
        Ok(if line.complete() && plain {
            digits.parse().ok()
        } else {
            None
        })
    }

    /// `GLOBAL` or `INST`: a module and a name, each on a line. CPython
    /// decodes both (`INST` as ASCII) and imports the module — its first
    /// importable component first — before it looks the name up.
    fn global(&mut self, op: u8) -> Result<Kind, Halt> {
        let module = self.line()?;
        let name = self.line()?;
        let ascii = op == b'i';
        let decoded = |arg: &Argument| arg.text().filter(|t| !ascii || t.is_ascii());
        let (Some(module_text), Some(name_text)) = (decoded(&module), decoded(&name)) else {
            return Err(self.fail("a global name that does not decode"));
        };
        if !self.strict && !first_import_plausible(&module, &module_text) {
            // Sniffed bytes: the first module Python would try to import is
            // no name Python source could import (`import torch` read as
            // INST); taken as the ImportError Python raises, so text files
            // are not pickles.
            return Err(Halt::Raise);
        }
        let what = format!(
            "{}.{}",
            module_text.escape_debug(),
            name_text.escape_debug()
        );
        let kind = (module.complete() && name.complete())
            .then(|| allowed(&module_text, &name_text))
            .flatten();
        match kind {
            None => Err(Halt::Unsafe(unsafe_global(&what))),
            Some(_) if op != b'c' => Err(Halt::Unsafe(format!(
                "it names {what} with the opcode {}, which torch.load(weights_only=True) refuses",
                named(op)
            ))),
            Some(kind) => {
                self.is_a_pickle()?;
                Ok(kind)
            }
        }
    }

    fn read(&mut self) -> Result<(), Halt> {
        loop {
            self.input.next_opcode();
            self.at = self.input.offset();
            let op = match self.input.next_byte() {
                Ok(Some(op)) => op,
                Ok(None) => return Err(self.short(Short::End)),
                Err(e) => return Err(self.short(e)),
            };
            if opcode_name(op).is_none() {
                return Err(self.fail(&format!("not a pickle opcode: 0x{op:02x}")));
            }
            self.opcode_refused(op);
            match op {
                b'.' => {
                    self.pop()?;
                    self.is_a_pickle()?;
                    return Ok(());
                }
                b'(' => {
                    self.machine.marks.push(self.machine.stack.len());
                    self.machine.live += VALUE_COST;
                    self.within_budget()?;
                }
                b'0' => {
                    let len = self.machine.stack.len();
                    if self.machine.marks.last() == Some(&len) {
                        self.machine.marks.pop();
                        self.machine.live -= VALUE_COST;
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top)?;
                }
                b'F' => {
                    self.line()?;
                    self.push(Value::Scalar)?;
                }
                b'I' | b'L' => {
                    // No reading of a line without a digit gives a number.
                    if !self.line()?.kept.iter().any(u8::is_ascii_digit) {
                        return Err(self.fail("a number without digits"));
                    }
                    self.push(Value::Scalar)?;
                }
                b'S' => {
                    // CPython refuses a STRING not wrapped in matching quotes.
                    let arg = self.line()?;
                    let quoted = arg.len >= 2
                        && matches!(arg.kept.first(), Some(b'\'' | b'"'))
                        && arg.kept.first() == arg.last.as_ref();
                    if !quoted {
                        return Err(self.fail("a STRING without quotes"));
                    }
                    self.push(Value::Str(Rc::new(arg)))?;
                }
                b'V' => {
                    let arg = self.line()?;
                    self.push(Value::Str(Rc::new(arg)))?;
                }
                b'P' => {
                    self.line()?;
                    self.push(Value::Unknown)?;
                }
                b'J' => self.fixed_scalar(4)?,
                b'K' => self.fixed_scalar(1)?,
                b'M' => self.fixed_scalar(2)?,
                b'G' => self.fixed_scalar(8)?,
                b'N' | 0x88 | 0x89 => self.push(Value::Scalar)?,
                b')' => self.push(Value::Tuple)?,
                b']' => self.push(Value::List)?,
                b'}' => self.push(Value::Dict)?,
                0x8f => self.push(Value::Set)?,
                b'T' => self.string(4, true)?,
                b'U' | 0x8c => self.string(1, false)?,
                b'X' => self.string(4, false)?,
                0x8d => self.string(8, false)?,
                b'B' => self.bytes(4)?,
                b'C' => self.bytes(1)?,
                0x8e | 0x96 => self.bytes(8)?,
                0x8a => {
                    let arg = self.counted(1, false)?;
                    self.legacy_magic |= self.first && arg.kept == LEGACY_MAGIC;
                    self.push(Value::Scalar)?;
                }
                0x8b => {
                    self.counted(4, true)?;
                    self.push(Value::Scalar)?;
                }
                0x80 => {
                    let protocol = self.uint(1)?;
                    if protocol > 5 {
                        return Err(self.fail(&format!("pickle protocol {protocol}")));
                    }
                }
                0x95 => {
                    // CPython reads a whole frame before its opcodes, and an
                    // argument that crosses its end is read from elsewhere:
                    // frames are followed, and a crossing is unsafe.
                    if self.input.in_frame() {
                        return Err(Halt::Unsafe(format!(
                            "a FRAME begins inside another (byte {})",
                            self.at
                        )));
                    }
                    let len = self.uint(8)?;
                    if len > i64::MAX as u64 || self.input.exceeds_remaining(len) {
                        return Err(self.fail("a FRAME past the end of the stream"));
                    }
                    self.input.begin_frame(len);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    if !matches!(pid, Value::Tuple | Value::Scalar) {
                        self.refuse(format!(
                            "a persistent id that is not a tuple (byte {})",
                            self.at
                        ));
                    }
                    self.push(Value::Unknown)?;
                }
                b'h' => {
                    let index = self.uint(1)?;
                    self.memo_get(Some(index))?;
                }
                b'j' => {
                    let index = self.uint(4)?;
                    self.memo_get(Some(index))?;
                }
                b'g' => {
                    let index = self.text_index()?;
                    self.memo_get(index)?;
                }
                b'q' => {
                    let index = self.uint(1)?;
                    self.memo_put(index)?;
                }
                b'r' => {
                    let index = self.uint(4)?;
                    self.memo_put(index)?;
                }
                b'p' => {
                    let index = self.text_index()?;
                    self.top()?;
                    match index {
                        Some(index) => self.memo_put(index)?,
                        None => self.memo_uncertain = true,
                    }
                }
                0x94 => {
                    let index = self.machine.memo.len() as u64;
                    self.memo_put(index)?;
                }
                0x85 => self.tuple(1)?,
                0x86 => self.tuple(2)?,
                0x87 => self.tuple(3)?,
                b't' => {
                    self.pop_mark()?;
                    self.push(Value::Tuple)?;
                }
                b'l' => {
                    self.pop_mark()?;
                    self.push(Value::List)?;
                }
                b'd' => {
                    let (n, _) = self.pop_mark()?;
                    if n % 2 == 1 {
                        return Err(self.fail("odd number of items for DICT"));
                    }
                    self.push(Value::Dict)?;
                }
                0x91 => {
                    self.pop_mark()?;
                    self.push(Value::Set)?;
                }
                b'a' => {
                    self.pop()?;
                    self.check_container(op)?;
                }
                b'e' | 0x90 => {
                    self.pop_mark()?;
                    self.check_container(op)?;
                }
                b's' => {
                    self.pop()?;
                    self.pop()?;
                    self.check_container(op)?;
                }
                b'u' => {
                    let (n, _) = self.pop_mark()?;
                    if n % 2 == 1 {
                        return Err(self.fail("odd number of items for SETITEMS"));
                    }
                    self.check_container(op)?;
                }
                b'c' => {
                    let kind = self.global(op)?;
                    self.push(Value::Global(kind))?;
                }
                b'i' => {
                    // CPython looks for the MARK before it reads the names.
                    if self.machine.marks.is_empty() {
                        return Err(self.fail("INST without a MARK"));
                    }
                    self.global(op)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    // Python raises "STACK_GLOBAL requires str"; anything that
                    // may be a string is an import.
                    let (module, name) = match (module, name) {
                        (Value::Str(m), Value::Str(n)) => (m.text(), n.text()),
                        (Value::Str(_) | Value::Unknown, Value::Str(_) | Value::Unknown) => {
                            (None, None)
                        }
                        _ => return Err(self.fail("STACK_GLOBAL on values that are not strings")),
                    };
                    let (Some(module), Some(name)) = (module, name) else {
                        return Err(Halt::Unsafe(
                            "it imports a global with the opcode STACK_GLOBAL, whose name the \
                             scan cannot read (torch.load(weights_only=True) refuses the opcode)"
                                .into(),
                        ));
                    };
                    let what = format!("{module}.{name}");
                    return Err(Halt::Unsafe(if allowed(&module, &name).is_some() {
                        format!(
                            "it imports {what} with the opcode STACK_GLOBAL, which \
                             torch.load(weights_only=True) refuses"
                        )
                    } else {
                        format!("{} (through STACK_GLOBAL)", unsafe_global(&what))
                    }));
                }
                0x82..=0x84 => {
                    let width = [1, 2, 4][usize::from(op - 0x82)];
                    self.uint(width)?;
                    // CPython registers no extension codes: without one the
                    // load raises, and with one it imports.
                    return Err(self.fail("an extension-registry global"));
                }
                b'R' | 0x81 | 0x92 | b'o' => self.call(op)?,
                b'b' => {
                    self.pop()?;
                    let builds = matches!(self.top()?, Value::Object(kind) if kind.buildable());
                    if !builds {
                        self.refuse(format!(
                            "BUILD gives state to a value that is not a tensor or a \
                             state dict (byte {})",
                            self.at
                        ));
                    }
                }
                0x97 => return Err(self.fail("an out-of-band buffer")),
                0x98 => {
                    self.top()?;
                }
                _ => unreachable!("every opcode with a name is handled"),
            }
        }
    }

    fn fixed_scalar(&mut self, n: usize) -> Result<(), Halt> {
        self.uint(n)?;
        self.push(Value::Scalar)
    }

    fn string(&mut self, len_bytes: usize, signed: bool) -> Result<(), Halt> {
        let arg = self.counted(len_bytes, signed)?;
        self.push(Value::Str(Rc::new(arg)))
    }

    fn bytes(&mut self, len_bytes: usize) -> Result<(), Halt> {
        self.counted(len_bytes, false)?;
        self.push(Value::Scalar)
    }

    fn tuple(&mut self, n: usize) -> Result<(), Halt> {
        for _ in 0..n {
            self.pop()?;
        }
        self.push(Value::Tuple)
    }

    /// `APPEND(S)`, `ADDITEMS`, `SETITEM(S)`: the target below must be the
    /// container torch allows for that opcode.
    fn check_container(&mut self, op: u8) -> Result<(), Halt> {
        let fits = matches!(
            (op, self.top()?),
            (b'a' | b'e', Value::List)
                | (0x90, Value::Set)
                | (b's' | b'u', Value::Dict | Value::Object(Kind::Mapping))
        );
        if !fits {
            let what = format!(
                "{} into a value that is not the container torch allows (byte {})",
                named(op),
                self.at
            );
            self.refuse(what);
        }
        Ok(())
    }

    /// `REDUCE`, `NEWOBJ`, `NEWOBJ_EX`, `OBJ`: the callee must be an
    /// allowed global; before any import none exists and Python raises.
    fn call(&mut self, op: u8) -> Result<(), Halt> {
        let callee = match op {
            b'R' | 0x81 => {
                self.pop()?;
                self.pop()?
            }
            0x92 => {
                self.pop()?;
                self.pop()?;
                self.pop()?
            }
            _ => match self.pop_mark()? {
                (_, Some(first)) => first,
                (_, None) => return Err(self.fail("OBJ without a class")),
            },
        };
        match callee {
            Value::Global(kind) if kind.callable() => self.push(Value::Object(kind)),
            Value::Global(_) => Err(Halt::Unsafe(format!(
                "{} calls a constant (byte {})",
                named(op),
                self.at
            ))),
            Value::Unknown => {
                self.is_a_pickle()?;
                Err(Halt::Unsafe(format!(
                    "{} calls a value the scan cannot vouch for (byte {})",
                    named(op),
                    self.at
                )))
            }
            _ if !self.strict => Err(Halt::Raise),
            _ => Err(Halt::Unsafe(format!(
                "{} calls a value that is not an allowed global (byte {})",
                named(op),
                self.at
            ))),
        }
    }
}

/// Whether the first module importlib would try to load for `module` has
/// a name Python source could import: the path's first part, or, after a
/// leading dot, its second (`.x` loads `x.py`). A first part longer than
/// what was kept is taken as plausible.
fn first_import_plausible(arg: &Argument, module: &str) -> bool {
    let mut parts = module.split('.');
    let first = match parts.next() {
        Some("") => parts.next().unwrap_or(""),
        Some(part) => part,
        None => "",
    };
    if !arg.complete() && !module.contains('.') {
        return true;
    }
    first.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && first
            .chars()
            .all(|c| c == '_' || c.is_ascii_alphanumeric() || !c.is_ascii())
}

fn unsafe_global(what: &str) -> String {
    format!(
        "it imports {what}, which is not among the globals a tensor checkpoint \
         needs and could run code when the file is loaded"
    )
}

/// torch's legacy magic number 0x1950a86a20f9469cfc6c as `LONG1` writes it.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The name of an opcode the reader already accepted, for messages.
fn named(op: u8) -> &'static str {
    opcode_name(op).unwrap_or("?")
}

/// The name pickletools gives an opcode; `None` for a byte that is no opcode.
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}
