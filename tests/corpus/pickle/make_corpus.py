#!/usr/bin/env python3
"""Writes the pickle corpus: known bypasses (unsafe/), checkpoints that must
pass (safe/), and files that are no pickle and must pass (not_pickles/).

The tests read these files (src/validate/pickle/tests.rs), and the fuzz
targets start from them (README.md, "Fuzzing the parsers"). Every byte is spelled out here
with the standard library, so the corpus is reproducible anywhere; when
torch is importable, real `torch.save` checkpoints are added to safe/, and
`--check-with-torch` loads every file with torch.load(weights_only=True) to
show that what the scan refuses, torch refuses too (or cannot read).

    python3 tests/corpus/pickle/make_corpus.py [--check-with-torch]
"""
import io
import os
import struct
import sys
import tarfile
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))

# --- a tiny pickle assembler -------------------------------------------------

MARK, STOP, TUPLE, REDUCE, BUILD = b"(", b".", b"t", b"R", b"b"
EMPTY_TUPLE, EMPTY_DICT, EMPTY_LIST = b")", b"}", b"]"
SETITEM, SETITEMS, APPEND = b"s", b"u", b"a"
NONE, NEWTRUE, NEWFALSE, POP = b"N", b"\x88", b"\x89", b"0"
BINPERSID, MEMOIZE, STACK_GLOBAL, DUP = b"Q", b"\x94", b"\x93", b"2"
TUPLE1, TUPLE2, TUPLE3 = b"\x85", b"\x86", b"\x87"


def proto(n):
    return b"\x80" + bytes([n])


def glob(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def uni(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def short_uni(text):
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binint1(n):
    return b"K" + bytes([n])


def binint(n):
    return b"J" + struct.pack("<i", n)


def binput(i):
    return b"q" + bytes([i])


def binget(i):
    return b"h" + bytes([i])


def long_binget(i):
    return b"j" + struct.pack("<I", i)


def binbytes(raw):
    return b"B" + struct.pack("<I", len(raw)) + raw


def call(module, name, *args):
    return glob(module, name) + MARK + b"".join(args) + TUPLE + REDUCE


def p2(*body):
    return proto(2) + b"".join(body) + STOP


def tensor(key, numel, dtype_storage="FloatStorage", legacy=False):
    """`_rebuild_tensor_v2(persistent storage, 0, (numel,), (1,), False, OrderedDict())`;
    a legacy stream's persistent id has a sixth field, the view metadata."""
    view = NONE if legacy else b""
    pid = MARK + uni("storage") + glob("torch", dtype_storage) + uni(key) + uni("cpu") + binint(numel) + view + TUPLE + BINPERSID
    return (
        glob("torch._utils", "_rebuild_tensor_v2")
        + MARK + pid + binint1(0) + binint(numel) + TUPLE1 + binint1(1) + TUPLE1 + NEWFALSE
        + glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
        + TUPLE + REDUCE
    )


def state_dict(*entries):
    """`OrderedDict([(name, tensor), …])` as torch.save writes a state dict."""
    body = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + MARK
    for name, value in entries:
        body += uni(name) + value
    return body + SETITEMS


def zip_checkpoint(pickle, extra=()):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))
        z.writestr("archive/data/1", bytes(4))
        z.writestr("archive/version", "3\n")
        for name, raw in extra:
            z.writestr(name, raw)
    return out.getvalue()


LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def legacy(object_pickle, keys_pickle=None, storage=b""):
    """torch.save(..., _use_new_zipfile_serialization=False): five pickles, then raw storages."""
    sys_info = p2(
        EMPTY_DICT, MARK,
        uni("protocol_version"), b"M" + struct.pack("<H", 1001),
        uni("little_endian"), NEWTRUE,
        uni("type_sizes"), EMPTY_DICT, MARK, uni("short"), binint1(2), uni("int"), binint1(4), uni("long"), binint1(4), SETITEMS,
        SETITEMS,
    )
    keys = keys_pickle if keys_pickle is not None else p2(EMPTY_LIST, MARK, uni("0"), b"e")
    return p2(LEGACY_MAGIC) + p2(b"M" + struct.pack("<H", 1001)) + sys_info + object_pickle + keys + storage


SAFE_STATE = p2(state_dict(("weight", tensor("0", 4)), ("bias", tensor("1", 2, "BFloat16Storage"))))

# --- the corpus ---------------------------------------------------------------

# Globals that import, evaluate, resolve names, run code or deserialize again.
GADGETS = [
    ("os", "system"), ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"),
    ("subprocess", "check_output"), ("builtins", "eval"), ("builtins", "exec"),
    ("builtins", "compile"), ("builtins", "getattr"), ("builtins", "__import__"),
    ("builtins", "open"), ("builtins", "bytearray"), ("__builtin__", "eval"),
    ("__builtin__", "getattr"), ("pkgutil", "resolve_name"), ("importlib", "import_module"),
    ("operator", "attrgetter"), ("operator", "methodcaller"), ("functools", "partial"),
    ("runpy", "_run_code"), ("runpy", "run_path"), ("runpy", "run_module"),
    ("timeit", "timeit"), ("pdb", "run"), ("code", "InteractiveInterpreter"),
    ("code", "interact"), ("torch.serialization", "load"), ("torch", "load"),
    ("torch.jit", "load"), ("torch._utils", "_rebuild_from_type_v2"),
    ("torch.storage", "_load_from_bytes"), ("numpy", "load"), ("numpy.core.multiarray", "_reconstruct"),
    ("pickle", "loads"), ("_pickle", "loads"), ("marshal", "loads"), ("types", "FunctionType"),
    ("ctypes", "CDLL"), ("shutil", "rmtree"), ("webbrowser", "open"), ("_codecs", "encode"),
    ("copyreg", "_reconstructor"), ("sys", "modules"), ("torch", "float"),
]

EVIL = call("os", "system", uni("id"))


def unsafe_corpus():
    cases = []
    for module, name in GADGETS:
        cases.append((f"global_{module}.{name}", p2(call(module, name, uni("x"))), f"{module}.{name}"))
    nested = p2(call("os", "system", uni("touch /tmp/pwned")))
    cases += [
        ("load_from_bytes_in_zip.pt",
         zip_checkpoint(p2(state_dict(("w", call("torch.storage", "_load_from_bytes", binbytes(nested)))))),
         "torch.storage._load_from_bytes"),
        ("evil_data_pkl.pt", zip_checkpoint(p2(EVIL)), "os.system"),
        ("evil_extra_pkl_in_zip.pt", zip_checkpoint(SAFE_STATE, [("archive/extra.pkl", p2(EVIL))]), "os.system"),
        # STACK_GLOBAL, whose operands may come from anywhere: torch has no STACK_GLOBAL.
        ("stack_global_direct", proto(4) + short_uni("os") + short_uni("system") + STACK_GLOBAL + uni("id") + TUPLE1 + REDUCE + STOP, "os.system"),
        ("stack_global_memoize", proto(4) + short_uni("os") + MEMOIZE + short_uni("system") + MEMOIZE + POP + POP + binget(0) + binget(1) + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + STOP, "os.system"),
        ("stack_global_binput", proto(4) + uni("os") + binput(7) + uni("system") + binput(9) + POP + POP + binget(7) + long_binget(9) + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + STOP, "os.system"),
        ("stack_global_text_memo", b"Vos\np0\nVsystem\np1\n00g0\ng1\n" + STACK_GLOBAL + b"(S'id'\ntR.", "os.system"),
        ("stack_global_dup", proto(4) + short_uni("builtins") + DUP + POP + short_uni("eval") + STACK_GLOBAL + STOP, "builtins.eval"),
        # Python's memo is a dict: PUT 0 twice leaves one entry, so MEMOIZE then stores at 1.
        ("stack_global_memo_recount", proto(4) + short_uni("x") + binput(0) + binput(0) + b"".join(short_uni(s) + MEMOIZE for s in ["collections", "os", "OrderedDict", "system"]) + binget(2) + binget(4) + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + STOP, "os.system"),
        ("stack_global_allowed_name", proto(4) + short_uni("collections") + short_uni("OrderedDict") + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + STOP, "STACK_GLOBAL"),
        ("stack_global_not_strings", proto(4) + binint1(1) + binint1(2) + STACK_GLOBAL + STOP, "STACK_GLOBAL"),
        # Protocols 0 and 1 have no PROTO byte.
        ("protocol0_global", b"cos\nsystem\n(S'id'\ntR.", "os.system"),
        ("protocol0_inst", b"(S'id'\nios\nsystem\n.", "os.system"),
        ("protocol0_allowed_global_text_opcodes", b"ccollections\nOrderedDict\n(tRp0\n.", "PUT"),
        ("protocol0_plain_dict", b"(dp0\nS'a'\np1\nI1\ns.", "DICT"),
        ("protocol1_global", b"cposix\nsystem\nq\x00(X\x02\x00\x00\x00idq\x01tq\x02Rq\x03.", "posix.system"),
        ("obj_opcode", p2(MARK + glob("os", "system") + uni("id") + b"o"), "os.system"),
        ("inst_allowed_name", p2(MARK + b"icollections\nOrderedDict\n"), "INST"),
        ("ext1", p2(b"\x82\x01" + EMPTY_TUPLE + REDUCE), "EXT1"),
        ("reduce_on_constant", p2(glob("torch", "float32") + EMPTY_TUPLE + REDUCE), "constant"),
        ("reduce_on_string", p2(uni("os.system") + EMPTY_TUPLE + REDUCE), "REDUCE"),
        ("build_on_dict", p2(EMPTY_DICT + EMPTY_DICT + BUILD), "BUILD"),
        ("setitem_on_list", p2(EMPTY_LIST + binint1(1) + binint1(2) + SETITEM), "SETITEM"),
        # Several pickles in one file, the second with or without PROTO.
        ("second_pickle_proto", SAFE_STATE + p2(EVIL), "os.system"),
        ("second_pickle_text", SAFE_STATE + b"cos\nsystem\n(S'id'\ntR.", "os.system"),
        ("legacy_evil_object", legacy(p2(call("posix", "system", uni("id")))), "posix.system"),
        ("legacy_evil_keys_without_proto", legacy(p2(tensor("0", 4, legacy=True)), keys_pickle=b"cos\nsystem\n(S'id'\ntR."), "os.system"),
        ("legacy_evil_after_storage", legacy(p2(tensor("0", 1, legacy=True)), storage=b"N." + p2(EVIL)), "os.system"),
        # Streams the scan cannot read to the end.
        ("truncated_state_dict", SAFE_STATE[: len(SAFE_STATE) // 2], "ends early"),
        ("truncated_after_proto", proto(2), "ends early"),
        ("truncated_string", proto(2) + b"X\x10\x00\x00\x00abc", "past the end"),
        ("declared_huge_string", proto(2) + b"X\xff\xff\xff\x7f" + b"a" * 64, "past the end"),
        ("memo_never_set", p2(binget(5)), "never set"),
        ("unknown_opcode", p2(b"\xff"), "0xff"),
        # No Python reads protocol 6: harmless as a plain file, no checkpoint either.
        ("protocol_6", proto(6) + NONE + STOP, "protocol 6", "checkpoint"),
        ("pop_in_checkpoint", p2(NONE + POP + NONE), "POP"),
        ("memoize_flood_small", proto(4) + NONE + MEMOIZE * 4096 + STOP, "MEMOIZE"),
        ("frame", proto(4) + b"\x95" + struct.pack("<Q", 2) + NONE + STOP, "FRAME"),
        ("persistent_id_string", p2(uni("storage") + BINPERSID), "persistent id"),
        # Found by review: places where a plain reading stops and CPython goes on.
        ("put_index_after_300_blanks", b"Np" + b" " * 300 + b"0\n0" + b"cos\nsystem\n)R.", "os.system"),
        ("get_index_after_300_blanks", b"Np0\n0g" + b" " * 300 + b"0\n0" + b"cos\nsystem\n)R.", "os.system"),
        ("stack_global_quoted_text", b"S'os'\nS'system'\n" + STACK_GLOBAL + b")R.", "STACK_GLOBAL"),
        ("stack_global_escaped_text", b"Vo\\u0073\nVsystem\n" + STACK_GLOBAL + b")R.", "STACK_GLOBAL"),
        # CPython imports the module before it looks the name up.
        ("module_imported_before_bad_name", b"cthis\nnot valid\n)R.", "this.not valid"),
        ("module_parent_before_nul", b"cthis.\x00\nx\n)R.", "this."),
        ("stack_global_bad_name", short_uni("this") + short_uni("not valid") + STACK_GLOBAL + b".", "this.not valid"),
        # CPython reads a frame whole; an argument crossing its end is read from after it.
        ("frame_crossing", b"\x95" + (9000).to_bytes(8, "little") + b"B" + (8992).to_bytes(4, "little") + b"A" * 8992 + b"J\xaa\xbb" + b"\x00\x00\xff\xff" + b"0" + b"cos\nsystem\n)R.", "FRAME"),
        # torch's legacy persistent_load returns a string for ('module', …): a STACK_GLOBAL operand.
        ("legacy_persistent_id_as_name", LEGACY_MAGIC + b".M\xe9\x03.}.(X\x06\x00\x00\x00moduleX\x08\x00\x00\x00builtinsX\x00\x00\x00\x00X\x00\x00\x00\x00tQ\x8c\x05print\x93\x8c\x05PWNED\x85R.].", "STACK_GLOBAL"),
        ("zip_with_fake_zip64_count.pt", zip_with_fake_entry_count(), "entries"),
        ("legacy_tar_checkpoint.pt", legacy_tar(), "tar"),
        # Found by a second review.
        ("text_put_nul_overwrites_memo", b"K\x01q\x010Vos\np1\x00\n0h\x01Vsystem\n" + STACK_GLOBAL + b")R.", "STACK_GLOBAL"),
        ("text_put_underscore_overwrites_memo", b"K\x01q\x0a0Vos\np1_0\n0h\x0aVsystem\n" + STACK_GLOBAL + b")R.", "STACK_GLOBAL"),
        # An Unpickler that loads twice keeps its memo.
        ("memo_of_an_earlier_pickle", proto(2) + uni("os") + binput(0) + STOP + binget(0) + uni("system") + STACK_GLOBAL + b")R.", "STACK_GLOBAL"),
        ("legacy_tar_v7_header.pt", legacy_tar(v7=True), "tar"),
        ("zip_data_pkl_upper_case.pt", zip_entries([("base/DATA.PKL", p2(EVIL))]), "os.system"),
        ("zip_data_pkl_both_cases.pt", zip_entries([("base/data.pkl", SAFE_STATE), ("base/DATA.PKL", p2(EVIL))]), "same name"),
        ("zip_data_pkl_twice.pt", zip_entries([("base/data.pkl", p2(EVIL)), ("base/data.pkl", SAFE_STATE)]), "same name"),
    ]
    return cases


def zip_entries(entries):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, raw in entries:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a duplicate name is the point
                z.writestr(name, raw)
    return out.getvalue()


def zip_with_fake_entry_count():
    """A ZIP whose stored data holds a ZIP64 end record declaring 10^9 entries."""
    def build(record_at):
        record = b"PK\x06\x06" + struct.pack("<Q", 44) + struct.pack("<HHII", 45, 45, 0, 0) + struct.pack("<QQQQ", 10**9, 10**9, 0, 0)
        locator = b"PK\x06\x07" + struct.pack("<IQI", 0, record_at, 1)
        end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", p2(EVIL))
            z.writestr("archive/junk", record + locator + end)
        data = out.getvalue()
        return data, data.find(b"PK\x06\x06")
    _, at = build(0)
    data, _ = build(at)
    return data


def legacy_tar(v7=False):
    """torch's oldest format: a tar whose `storages` member torch unpickles;
    `v7`: old headers without the `ustar` magic, which tarfile reads too."""
    out = b""
    for name, raw in [("storages", p2(EVIL)), ("tensors", p2(EMPTY_LIST)), ("pickle", p2(NONE))]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(raw), 0, 0o644
        header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
        if v7:
            header[257:265] = bytes(8)
            header[329:345] = bytes(16)
            header[148:156] = b" " * 8
            header[148:156] = b"%06o\0 " % sum(header)
        out += bytes(header) + raw + bytes((512 - len(raw) % 512) % 512)
    return out + bytes(1024)


def safe_corpus():
    """Checkpoints spelled out as torch.save writes them; torch.load(weights_only=True) loads each."""
    return [
        ("state_dict_zip.pt", zip_checkpoint(SAFE_STATE)),
        ("legacy.pt", legacy(p2(state_dict(("w", tensor("0", 4, legacy=True)))), storage=struct.pack("<Q", 4) + struct.pack("<4f", 1, 2, 3, 4))),
        # The raw storage after a legacy stream may look like PROTO 2.
        ("legacy_storage_looks_like_proto.pt", legacy(p2(state_dict(("w", tensor("0", 640, legacy=True)))), storage=struct.pack("<Q", 640) + bytes(640 * 4))),
    ]


def not_pickles():
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    header += b" " * (0x0280 - len(header))  # length 640: the file starts 0x80 0x02
    return [
        ("config.json", b'{"architectures": ["BertModel"], "hidden_size": 8}\n'),
        ("vocab.txt", b"[PAD]\n[UNK]\n[CLS]\nthe\n"),
        ("modeling.py", b"import torch\nclass Tiny(torch.nn.Module):\n    pass\n"),
        ("README.md", b"---\nlicense: mit\n---\n# tiny\n"),
        ("proto_like.safetensors", struct.pack("<Q", len(header)) + header + bytes(4)),
        ("array.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n" + bytes(4)),
        ("flax_model.msgpack", b"\x82\xa6params\x80\xa5extra\xc0"),
        ("tokenizer.model", b"\x0a\x0b\x0a\x05<unk>\x15\x00\x00\x00\x00"),
        ("gguf.bin.gguf", b"GGUF\x03\x00\x00\x00" + struct.pack("<QQ", 1, 0)),
        ("raw_none_pop", (NONE + POP) * 1000),
        ("requirements.txt", b"pandas==2.1.0\ntorch>=2\n"),
        ("notes.txt", b"python 3.11 notes\nindex\nfoo\n"),
        ("index.txt", b"index\nfoo\nbar\n"),
        ("notes.md", b"See the notes below\n...\nmore\n"),
        ("important.txt", b"Important:\n. bullet\n"),
    ]


def write(folder, name, raw):
    os.makedirs(os.path.join(HERE, folder), exist_ok=True)
    with open(os.path.join(HERE, folder, name), "wb") as f:
        f.write(raw)


def torch_checkpoints():
    try:
        import torch
    except ImportError:
        return []
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    state = model.state_dict()
    mixed = {"w16": torch.ones(3, dtype=torch.float16), "bf": torch.zeros(2, dtype=torch.bfloat16), "step": 7, "name": "x"}
    out = []
    for name, obj, legacy_format in [
        ("torch_state_dict_zip.pt", state, False),
        ("torch_state_dict_legacy.pt", state, True),
        ("torch_mixed_zip.pt", mixed, False),
        ("torch_mixed_legacy.pt", mixed, True),
        ("torch_parameter_zip.pt", {"p": torch.nn.Parameter(torch.ones(2))}, False),
    ]:
        buf = io.BytesIO()
        torch.save(obj, buf, _use_new_zipfile_serialization=not legacy_format)
        out.append((name, buf.getvalue()))
    return out


def main():
    expectations = []
    for name, raw, expected, *scope in unsafe_corpus():
        write("unsafe", name, raw)
        expectations.append(f"{name}\t{expected}\t{scope[0] if scope else 'any'}\n")
    with open(os.path.join(HERE, "unsafe", "EXPECTED.tsv"), "w") as f:
        f.write("# file\ta phrase the refusal must contain\trefused as: any file, or only as a checkpoint\n")
        f.writelines(expectations)
    for name, raw in safe_corpus() + torch_checkpoints():
        write("safe", name, raw)
    for name, raw in not_pickles():
        write("not_pickles", name, raw)
    if "--check-with-torch" in sys.argv:
        check_with_torch()


def check_with_torch():
    """torch.load(weights_only=True) must refuse (or fail on) every unsafe file, and load every safe one."""
    import torch

    for folder, want_ok in [("unsafe", False), ("safe", True)]:
        for name in sorted(os.listdir(os.path.join(HERE, folder))):
            if name.endswith(".tsv"):
                continue
            try:
                torch.load(os.path.join(HERE, folder, name), weights_only=True)
                ok, why = True, ""
            except Exception as e:  # noqa: BLE001 - any refusal counts
                lines = [l for l in str(e).splitlines() if "WeightsUnpickler error" in l] or str(e).splitlines() or [""]
                ok, why = False, f"{type(e).__name__}: {lines[0][:110]}"
            verdict = "ok" if ok == want_ok else ("stricter" if ok else "MISMATCH")
            print(f"{verdict:8} {folder}/{name}: {'loads' if ok else why}")


if __name__ == "__main__":
    main()
