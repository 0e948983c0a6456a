//! The globals a checkpoint may name: a strict subset of what
//! `torch.load(weights_only=True)` accepts by default, as listed by
//! `_get_allowed_globals()` in `torch/_weights_only_unpickler.py` of torch
//! 2.10.0 (the same list on pytorch/pytorch main at 00f730b6). Only what a
//! plain tensor checkpoint needs is here; nothing that imports a module by a
//! name the pickle chooses, evaluates text, resolves attribute names, looks
//! up a codec by name, or deserializes bytes again. Each group says why
//! loading it cannot run code.

/// What an allowed global is, which decides what the pickle may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A function torch calls with `REDUCE`; its result is a tensor, which
    /// `BUILD` may give state to.
    TensorRebuild,
    /// A mapping class: its object takes items (`SETITEM(S)`) and `BUILD`
    /// state, as torch allows for `OrderedDict`.
    Mapping,
    /// A class or value constructor whose result holds plain values only.
    Value,
    /// A constant (a dtype, a storage type, a quantization scheme): pushed
    /// as an argument, never called.
    Constant,
}

impl Kind {
    /// Whether `REDUCE` may call it or `NEWOBJ` instantiate it.
    pub fn callable(self) -> bool {
        self != Kind::Constant
    }

    /// Whether `BUILD` may give state to what calling it returned.
    pub fn buildable(self) -> bool {
        matches!(self, Kind::TensorRebuild | Kind::Mapping)
    }
}

/// Globals of one module that are allowed for the same reason.
#[derive(Debug)]
pub struct Group {
    pub module: &'static str,
    pub names: &'static [&'static str],
    pub kind: Kind,
    pub why: &'static str,
}

/// Every global a checkpoint may name, by group.
pub static ALLOWED: &[Group] = &[
    Group {
        module: "collections",
        names: &["OrderedDict"],
        kind: Kind::Mapping,
        why: "the state dict: an empty dict subclass; its items and its \
              `_metadata` are set on it as data",
    },
    Group {
        module: "torch._utils",
        names: &[
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_qtensor",
        ],
        kind: Kind::TensorRebuild,
        why: "builds a tensor from a storage of the checkpoint and plain \
              arguments; calls nothing the pickle names",
    },
    Group {
        module: "torch._tensor",
        names: &["_rebuild_from_type_v2"],
        kind: Kind::TensorRebuild,
        why: "calls the function it is given, which this scan has already \
              limited to this list, then sets plain attributes",
    },
    Group {
        module: "torch",
        names: &["Size"],
        kind: Kind::Value,
        why: "a tuple of ints",
    },
    Group {
        module: "torch",
        names: &["Tensor"],
        kind: Kind::Value,
        why: "the tensor class, as `_rebuild_from_type_v2`'s type argument; \
              an empty tensor runs no Python code",
    },
    Group {
        module: "torch.nn.parameter",
        names: &["Parameter"],
        kind: Kind::Value,
        why: "wraps a tensor the pickle already built",
    },
    Group {
        module: "builtins",
        names: &["set"],
        kind: Kind::Value,
        why: "a set of the plain values given",
    },
    Group {
        module: "torch",
        names: &[
            "float64",
            "float32",
            "float16",
            "bfloat16",
            "int64",
            "int32",
            "int16",
            "int8",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "bool",
            "complex32",
            "complex64",
            "complex128",
            "float8_e5m2",
            "float8_e4m3fn",
            "float8_e5m2fnuz",
            "float8_e4m3fnuz",
            "quint8",
            "qint8",
            "qint32",
            "quint4x2",
            "quint2x4",
        ],
        kind: Kind::Constant,
        why: "a torch.dtype constant, under its canonical name (`str(dtype)`)",
    },
    Group {
        module: "torch",
        names: &[
            "ByteStorage",
            "CharStorage",
            "ShortStorage",
            "IntStorage",
            "LongStorage",
            "HalfStorage",
            "FloatStorage",
            "DoubleStorage",
            "BFloat16Storage",
            "BoolStorage",
            "ComplexFloatStorage",
            "ComplexDoubleStorage",
            "QUInt8Storage",
            "QInt8Storage",
            "QInt32Storage",
        ],
        kind: Kind::Constant,
        why: "a storage type: torch's loader maps it to a dtype and never calls it",
    },
    Group {
        module: "torch.storage",
        names: &["UntypedStorage"],
        kind: Kind::Constant,
        why: "the untyped storage type, named in a persistent id; never called",
    },
    Group {
        module: "torch",
        names: &[
            "per_tensor_affine",
            "per_channel_affine",
            "per_channel_affine_float_qparams",
        ],
        kind: Kind::Constant,
        why: "a quantization scheme constant for `_rebuild_qtensor`",
    },
];

/// The allowed global `module.name`, if it is one. Python 2's `__builtin__`
/// is read as `builtins`, as torch's loader maps it.
pub fn allowed(module: &str, name: &str) -> Option<Kind> {
    let module = if module == "__builtin__" {
        "builtins"
    } else {
        module
    };
    ALLOWED
        .iter()
        .find(|g| g.module == module && g.names.contains(&name))
        .map(|g| g.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole list, spelled out: a change to it must change this test,
    /// and every entry carries the reason it cannot run code.
    #[test]
    fn every_allowed_global_is_listed_with_its_reason() {
        let listed: Vec<String> = ALLOWED
            .iter()
            .flat_map(|g| {
                assert!(g.why.len() > 10, "{} needs a reason", g.module);
                g.names.iter().map(move |n| format!("{}.{n}", g.module))
            })
            .collect();
        let expected = [
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor",
            "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_tensor_v3",
            "torch._utils._rebuild_parameter",
            "torch._utils._rebuild_parameter_with_state",
            "torch._utils._rebuild_qtensor",
            "torch._tensor._rebuild_from_type_v2",
            "torch.Size",
            "torch.Tensor",
            "torch.nn.parameter.Parameter",
            "builtins.set",
            "torch.float64",
            "torch.float32",
            "torch.float16",
            "torch.bfloat16",
            "torch.int64",
            "torch.int32",
            "torch.int16",
            "torch.int8",
            "torch.uint8",
            "torch.uint16",
            "torch.uint32",
            "torch.uint64",
            "torch.bool",
            "torch.complex32",
            "torch.complex64",
            "torch.complex128",
            "torch.float8_e5m2",
            "torch.float8_e4m3fn",
            "torch.float8_e5m2fnuz",
            "torch.float8_e4m3fnuz",
            "torch.quint8",
            "torch.qint8",
            "torch.qint32",
            "torch.quint4x2",
            "torch.quint2x4",
            "torch.ByteStorage",
            "torch.CharStorage",
            "torch.ShortStorage",
            "torch.IntStorage",
            "torch.LongStorage",
            "torch.HalfStorage",
            "torch.FloatStorage",
            "torch.DoubleStorage",
            "torch.BFloat16Storage",
            "torch.BoolStorage",
            "torch.ComplexFloatStorage",
            "torch.ComplexDoubleStorage",
            "torch.QUInt8Storage",
            "torch.QInt8Storage",
            "torch.QInt32Storage",
            "torch.storage.UntypedStorage",
            "torch.per_tensor_affine",
            "torch.per_channel_affine",
            "torch.per_channel_affine_float_qparams",
        ];
        assert_eq!(listed, expected);
    }

    #[test]
    fn nothing_that_imports_evaluates_resolves_or_deserializes_is_allowed() {
        for (module, name) in [
            ("torch.storage", "_load_from_bytes"),
            ("torch.serialization", "load"),
            ("torch", "load"),
            ("torch._utils", "_rebuild_from_type_v2"),
            ("torch._utils", "_rebuild_device_tensor_from_numpy"),
            ("_codecs", "encode"),
            ("builtins", "bytearray"),
            ("builtins", "getattr"),
            ("builtins", "eval"),
            ("__builtin__", "eval"),
            ("pkgutil", "resolve_name"),
            ("importlib", "import_module"),
            ("operator", "attrgetter"),
            ("runpy", "run_path"),
            ("torch", "float"),
            ("torch", "EvilStorage"),
        ] {
            assert_eq!(allowed(module, name), None, "{module}.{name}");
        }
        assert_eq!(allowed("__builtin__", "set"), Some(Kind::Value));
    }
}
