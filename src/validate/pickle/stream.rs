//! The pickles of one stream, in the order a loader reads them: a
//! checkpoint's first pickle (and, after torch's legacy magic number, the
//! four that follow) held to the strict rule, then whatever follows sniffed
//! for more, as a loader calling `pickle.load` again and again would find
//! them. Depends only on `input` and `machine`, so the fuzz targets build
//! it without the rest of the crate.

use std::io::Read;

use super::input::Input;
use super::machine::{Ending, Machine, Mode};

/// Pickles a legacy `torch.save` stream starts with: the magic number, the
/// protocol version, system information, the object, the storage keys.
const LEGACY_PICKLES: usize = 5;

/// A checkpoint's pickle stream: its first pickle held to the strict rule
/// (and the four after torch's legacy magic number, which `torch.load`
/// reads whatever they hold), then whatever follows sniffed for more.
pub fn scan_checkpoint_stream(reader: impl Read, len: Option<u64>) -> Result<(), String> {
    let mut input = Input::new(reader, len);
    let mut machine = Machine::default();
    let legacy = match machine.read_one(&mut input, Mode::Strict, true)? {
        Ending::Stop { legacy_magic } => legacy_magic,
        Ending::NotAPickle => unreachable!("strict reads end at STOP or fail"),
    };
    if legacy {
        for _ in 1..LEGACY_PICKLES {
            machine.read_one(&mut input, Mode::Strict, false)?;
        }
    }
    sniff_rest(&mut machine, &mut input, false)
}

/// Bytes that may hold pickles: each pickle found, one after another as a
/// loader calling `pickle.load` repeatedly would read them, is held to the
/// rule; the first bytes Python's loader would refuse end the search.
pub fn sniff_stream(reader: impl Read, len: Option<u64>) -> Result<(), String> {
    let mut input = Input::new(reader, len);
    sniff_rest(&mut Machine::default(), &mut input, true)
}

/// Sniffs pickle after pickle; `first` when the stream starts here.
fn sniff_rest<R: Read>(
    machine: &mut Machine,
    input: &mut Input<R>,
    mut first: bool,
) -> Result<(), String> {
    while let Ending::Stop { .. } = machine.read_one(input, Mode::Sniff, first)? {
        first = false;
    }
    Ok(())
}
