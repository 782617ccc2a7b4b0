"""Model and directory digests (formats v1, ARCHITECTURE.md).

The model digest is the interop contract between Flower, MLflow and Lightning entries
and any other implementation: the hand-computed digests below are built only from the
written spec (hashlib, struct and merkle.root), never from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import merkle
from flchain_plugin.digest import (
    CHUNK_SIZE,
    READ_AHEAD_MIN,
    READ_AHEAD_STEP,
    DigestError,
    RawTensor,
    as_raw_tensor,
    copy_files,
    directory_digest,
    directory_files,
    file_digest,
    files_root,
    format_digest,
    model_digest,
    parse_digest,
)

torch = pytest.importorskip("torch")

MIB = 1 << 20


def numpy_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.weight": rng.standard_normal((300_000,)).astype(np.float32),  # 2 chunks
        "double": rng.standard_normal((5, 2)),
        "half": rng.standard_normal((3, 3)).astype(np.float16),
        "steps": np.array([1, -2, 2**40], dtype=np.int64),
        "small_ints": np.array([[-1, 2], [3, -4]], dtype=np.int8),
        "bytes": np.arange(10, dtype=np.uint8),
        "mask": np.array([True, False, True, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(2.5, dtype=np.float32),
        "num_batches_tracked": np.array(17, dtype=np.int64),
    }


BF16 = torch.tensor([[1.0, -2.5], [0.125, 3e38]], dtype=torch.bfloat16)


def bf16_raw() -> RawTensor:
    return RawTensor("torch.bfloat16", (2, 2), BF16.view(torch.int16).numpy().tobytes())


def raw_model(model: dict[str, np.ndarray]) -> dict[str, RawTensor]:
    out = {}
    for name, a in model.items():
        le = a.astype(a.dtype.newbyteorder("<"))
        out[name] = RawTensor(le.dtype.str, a.shape, np.ascontiguousarray(le).tobytes())
    return out


def test_same_digest_from_every_container() -> None:
    model = numpy_model()
    want = model_digest(model)
    state_dict = {k: torch.from_numpy(v.copy()) for k, v in model.items()}
    assert model_digest(state_dict) == want
    assert model_digest(raw_model(model)) == want
    # mixed containers within one dict
    mixed = {k: (state_dict[k] if i % 2 else v) for i, (k, v) in enumerate(model.items())}
    assert model_digest(mixed) == want
    # numpy's float32 and torch.float32 parameters with requires_grad
    params = {k: torch.nn.Parameter(torch.from_numpy(v.copy()), requires_grad=v.dtype.kind == "f")
              for k, v in model.items()}
    assert model_digest(params) == want


def test_bfloat16_from_torch_and_raw_bytes() -> None:
    model = {**numpy_model(), "bf": BF16}
    want = model_digest(model)
    assert model_digest({**raw_model(numpy_model()), "bf": bf16_raw()}) == want
    assert model_digest({**numpy_model(), "bf": bf16_raw()}) == want
    # the same bits read as int16 are a different tensor
    assert model_digest({**numpy_model(), "bf": BF16.view(torch.int16)}) != want


def test_torch_module_state_dict() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
    sd = net.state_dict()
    as_numpy = {k: v.detach().numpy().copy() for k, v in sd.items()}
    assert model_digest(sd) == model_digest(as_numpy)
    assert "1.num_batches_tracked" in sd


def test_list_is_named_by_position() -> None:
    arrays = [np.full((2,), i, dtype=np.float32) for i in range(12)]  # "10" sorts before "2"
    by_name = {str(i): a for i, a in enumerate(arrays)}
    assert model_digest(arrays) == model_digest(by_name) == model_digest(tuple(arrays))
    assert model_digest([torch.from_numpy(a) for a in arrays]) == model_digest(by_name)
    # order of a dict does not matter, order of a list does
    assert model_digest(dict(reversed(list(by_name.items())))) == model_digest(by_name)
    assert model_digest(arrays[::-1]) != model_digest(arrays)


def test_layout_does_not_matter() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((64, 48)).astype(np.float32)
    want = model_digest({"w": base})
    fortran = np.asfortranarray(base)
    assert not fortran.flags.c_contiguous
    assert model_digest({"w": fortran}) == want
    big_endian = base.astype(">f4")
    assert big_endian.dtype.byteorder == ">"
    assert model_digest({"w": big_endian}) == want
    big_endian_fortran = np.asfortranarray(big_endian)
    assert model_digest({"w": big_endian_fortran}) == want
    wide = np.zeros((64, 96), dtype=np.float32)
    wide[:, ::2] = base
    strided = wide[:, ::2]
    assert not strided.flags.c_contiguous and np.array_equal(strided, base)
    assert model_digest({"w": strided}) == want
    transposed = np.ascontiguousarray(base.T).T  # a transposed view of other memory
    assert model_digest({"w": transposed}) == want
    t = torch.from_numpy(np.ascontiguousarray(base.T)).T
    assert not t.is_contiguous()
    assert model_digest({"w": t}) == want
    assert model_digest({"w": torch.from_numpy(wide)[:, ::2]}) == want
    ints = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert model_digest({"i": ints.astype(">i8")}) == model_digest({"i": ints})


def test_scalars() -> None:
    want = model_digest({"s": np.array(2.5, dtype=np.float64)})
    assert model_digest({"s": np.float64(2.5)}) == want
    assert model_digest({"s": 2.5}) == want
    assert model_digest({"s": torch.tensor(2.5, dtype=torch.float64)}) == want
    assert model_digest({"s": np.array([2.5])}) != want  # shape [1] is not shape []
    assert model_digest({"s": np.array(2.5, dtype=np.float32)}) != want


def test_empty_tensors_and_empty_model() -> None:
    a = model_digest({"e": np.zeros((0,), np.float32)})
    b = model_digest({"e": np.zeros((0, 3), np.float32)})
    c = model_digest({"e": torch.zeros((0, 3))})
    assert a != b == c
    assert model_digest({}) == format_digest(hashlib.sha256().digest()) == model_digest([])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_one_flipped_bit_changes_the_digest(data: st.DataObject) -> None:
    model = raw_model(numpy_model())
    names = sorted(k for k, v in model.items() if len(v.data))
    name = data.draw(st.sampled_from(names))
    raw = bytearray(model[name].data)
    bit = data.draw(st.integers(0, 8 * len(raw) - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    before = model_digest(model)
    model[name] = RawTensor(model[name].dtype, model[name].shape, bytes(raw))
    assert model_digest(model) != before


def test_name_shape_and_dtype_are_part_of_the_digest() -> None:
    a = np.arange(6, dtype=np.float32)
    want = model_digest({"w": a})
    assert model_digest({"v": a}) != want
    assert model_digest({"w": a.reshape(2, 3)}) != want
    assert model_digest({"w": a.view(np.int32)}) != want
    assert model_digest({"w": a, "x": np.zeros(0, np.float32)}) != want


def test_threads_agree() -> None:
    rng = np.random.default_rng(3)
    model = {f"layer{i}": rng.standard_normal(700_000).astype(np.float32) for i in range(3)}
    one = model_digest(model, threads=1)
    assert model_digest(model, threads=2) == one
    assert model_digest(model, threads=8) == one
    assert model_digest(model) == one


# -- the interop contract, by hand -----------------------------------------------------------

def _leaf(name: str, dtype: str, shape: list[int], raw: bytes, chunk: int, chunks: int) -> bytes:
    dims = ",".join(str(s) for s in shape)
    header = (
        f'{{"chunk":{chunk},"chunks":{chunks},"dtype":"{dtype}","name":"{name}",'
        f'"shape":[{dims}]}}'
    )
    return hashlib.sha256(b"\x00" + header.encode("utf-8") + b"\n" + raw).digest()


def test_hand_computed_model_digest() -> None:
    n_big = CHUNK_SIZE // 4 + 1  # one float32 past a full chunk: 2 chunks
    assert CHUNK_SIZE == MIB
    big_raw = struct.pack(f"<{n_big}f", *range(n_big))
    leaves = [
        # tensors in UTF-8 name order: "b" < "big" < "empty" < "h" < "s" < "w" < "é"
        _leaf("b", "<i8", [2], struct.pack("<2q", 7, -1), 0, 1),
        _leaf("big", "<f4", [n_big], big_raw[:MIB], 0, 2),
        _leaf("big", "<f4", [n_big], big_raw[MIB:], 1, 2),
        _leaf("empty", "<f4", [0, 3], b"", 0, 1),
        _leaf("h", "torch.bfloat16", [2], bytes.fromhex("803f0040"), 0, 1),  # 1.0, 2.0
        _leaf("s", "<f8", [], struct.pack("<d", 2.5), 0, 1),
        _leaf("w", "<f4", [2, 2], struct.pack("<4f", 1.0, -2.0, 0.5, 3.25), 0, 1),
        _leaf("é", "|b1", [3], b"\x01\x00\x01", 0, 1),
    ]
    want = "sha256:" + merkle.root(leaves).hex()

    numpy_side = {
        "w": np.array([[1.0, -2.0], [0.5, 3.25]], dtype=np.float32),
        "é": np.array([True, False, True]),
        "b": np.array([7, -1], dtype=np.int64),
        "s": np.float64(2.5),
        "big": np.arange(n_big, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "h": RawTensor("torch.bfloat16", (2,), bytes.fromhex("803f0040")),
    }
    assert model_digest(numpy_side) == want
    torch_side = {
        "w": torch.tensor([[1.0, -2.0], [0.5, 3.25]]),
        "é": torch.tensor([True, False, True]),
        "b": torch.tensor([7, -1]),
        "s": torch.tensor(2.5, dtype=torch.float64),
        "big": torch.arange(n_big, dtype=torch.float32),
        "empty": torch.zeros((0, 3)),
        "h": torch.tensor([1.0, 2.0], dtype=torch.bfloat16),
    }
    assert model_digest(torch_side) == want
    assert model_digest(torch_side, threads=2) == want


def test_hand_computed_single_tensor() -> None:
    """The smallest case spelled out: one leaf, so the digest is that leaf's hash."""
    data = b'{"chunk":0,"chunks":1,"dtype":"<f4","name":"w","shape":[1]}\n' + b"\x00\x00\x80\x3f"
    want = "sha256:" + hashlib.sha256(b"\x00" + data).hexdigest()
    assert model_digest({"w": np.array([1.0], dtype=np.float32)}) == want
    assert model_digest([torch.ones(1)]) != want  # named "0", not "w"
    assert model_digest({"w": torch.ones(1)}) == want


# -- zero copy -----------------------------------------------------------------------------

def _peak_while(fn) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("threads", [1, 2])
def test_hashing_does_not_copy_tensor_memory(threads: int) -> None:
    size = 32 * MIB
    arr = np.ones(size // 4, dtype=np.float32)
    peak = _peak_while(lambda: model_digest({"w": arr}, threads=threads))
    assert peak < size / 16, f"digest allocated {peak} bytes for a {size}-byte array"
    # The measurement sees numpy copies: a layout that must be converted shows up.
    fortran = np.asfortranarray(arr.reshape(2048, -1))
    copied = _peak_while(lambda: model_digest({"w": fortran}, threads=threads))
    assert copied >= size * 0.9


def test_views_share_tensor_memory() -> None:
    arr = np.arange(1000, dtype=np.float32)
    raw = as_raw_tensor("a", arr)
    assert np.frombuffer(raw.data, dtype=np.uint8).ctypes.data == arr.ctypes.data
    t = torch.arange(1000, dtype=torch.float32)
    raw = as_raw_tensor("t", t)
    assert np.frombuffer(raw.data, dtype=np.uint8).ctypes.data == t.data_ptr()
    bf = torch.ones(10, dtype=torch.bfloat16)
    raw = as_raw_tensor("bf", bf)
    assert np.frombuffer(raw.data, dtype=np.uint8).ctypes.data == bf.data_ptr()
    assert raw.dtype == "torch.bfloat16"


def test_refused_inputs() -> None:
    with pytest.raises(DigestError, match="cannot digest a str"):
        model_digest("weights.pt")
    with pytest.raises(DigestError, match="tensor 'x': cannot digest a list"):
        model_digest({"x": [1.0, 2.0]})
    with pytest.raises(DigestError, match="Python objects"):
        model_digest({"x": np.array([], dtype=object)})


def test_object_array_is_a_digest_error() -> None:
    """Checked before the array is viewed as bytes (numpy would raise its own TypeError)."""
    with pytest.raises(DigestError, match=r"'x'.*Python objects"):
        model_digest({"x": np.array([object()])})


# -- digest strings ---------------------------------------------------------------------------

def test_parse_and_format_digest() -> None:
    raw = hashlib.sha256(b"x").digest()
    text = format_digest(raw)
    assert text == "sha256:" + raw.hex()
    assert parse_digest(text) == raw
    for bad in (text.upper(), text[:-1], text + "0", "sha512:" + raw.hex(), raw.hex(),
                "sha256:" + "g" * 64, " " + text, None, 5):
        with pytest.raises(DigestError, match="not a digest"):
            parse_digest(bad)  # type: ignore[arg-type]
    with pytest.raises(DigestError, match="31 bytes"):
        format_digest(raw[:31])


# -- directory digests ------------------------------------------------------------------------

FILES = {
    "a.txt": b"hello\n",
    "Z.md": b"z",
    "sub/b.bin": bytes(range(256)),
    "sub/deeper/c": b"",
    "é.txt": "é".encode(),
    "a-b": b"1",
    "a.b": b"2",
    "a/b": b"3",
    "a0": b"4",
}


def make_tree(root: Path, files: dict[str, bytes], order: list[str] | None = None) -> Path:
    for rel in order or list(files):
        p = root.joinpath(*rel.split("/"))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[rel])
    return root


def test_hand_computed_directory_digest(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "model", FILES)
    order = sorted(FILES, key=lambda p: p.encode("utf-8"))
    assert order == ["Z.md", "a-b", "a.b", "a.txt", "a/b", "a0", "sub/b.bin", "sub/deeper/c",
                     "é.txt"]
    leaves = []
    for rel in order:
        data = FILES[rel]
        hexd = hashlib.sha256(data).hexdigest()
        leaf = f'{{"digest":"sha256:{hexd}","path":"{rel}","size":{len(data)}}}'
        leaves.append(hashlib.sha256(b"\x00" + leaf.encode("utf-8")).digest())
    want = "sha256:" + merkle.root(leaves).hex()
    assert directory_digest(root) == want
    files = directory_files(root)
    assert [f.path for f in files] == order
    assert files_root(files) == want
    assert all(f.digest == file_digest(root / f.path) for f in files)
    assert [json.loads(f.leaf_data())["size"] for f in files] == [len(FILES[p]) for p in order]
    # a file's inclusion is provable without the others
    i = order.index("sub/b.bin")
    proof = merkle.inclusion_proof(leaves, i)
    merkle.verify_inclusion(i, len(leaves), merkle.leaf_hash(files[i].leaf_data()), proof,
                            bytes.fromhex(want[7:]))


def test_directory_digest_ignores_creation_order(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", FILES)
    b = make_tree(tmp_path / "b", FILES, order=list(reversed(FILES)))
    assert directory_digest(a) == directory_digest(b)
    os.utime(b / "a.txt", (0, 0))  # metadata is not content
    assert directory_digest(a) == directory_digest(b)


def test_directory_digest_changes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "m", FILES)
    want = directory_digest(root)
    data = bytearray(FILES["sub/b.bin"])
    data[100] ^= 0x01
    (root / "sub" / "b.bin").write_bytes(bytes(data))
    assert directory_digest(root) != want
    (root / "sub" / "b.bin").write_bytes(FILES["sub/b.bin"])
    assert directory_digest(root) == want
    (root / "sub" / "b.bin").rename(root / "sub" / "b2.bin")  # same bytes, other path
    assert directory_digest(root) != want
    (root / "sub" / "b2.bin").rename(root / "sub" / "b.bin")
    (root / "new").write_bytes(b"")  # an added empty file counts
    assert directory_digest(root) != want
    (root / "new").unlink()
    (root / "emptydir").mkdir()  # empty directories are not content
    assert directory_digest(root) == want


def test_excluded_files(tmp_path: Path) -> None:
    full = make_tree(tmp_path / "full", FILES)
    without = make_tree(tmp_path / "without", {k: v for k, v in FILES.items() if k != "sub/b.bin"})
    assert directory_digest(full, exclude=["sub/b.bin"]) == directory_digest(without)
    assert directory_digest(full, exclude=["sub/b.bin"]) != directory_digest(full)
    assert [f.path for f in directory_files(full, exclude={"sub/b.bin", "a.txt"})] == [
        p for p in sorted(FILES, key=str.encode) if p not in ("sub/b.bin", "a.txt")]


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert directory_digest(tmp_path / "empty") == "sha256:" + hashlib.sha256().hexdigest()


def test_symlinks_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    root = make_tree(tmp_path / "m", {"a.txt": b"a"})
    (root / "link.txt").symlink_to(outside)
    with pytest.raises(DigestError, match=r"link\.txt: is a symlink"):
        directory_digest(root)
    (root / "link.txt").unlink()
    (root / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DigestError, match=r"linkdir: is a symlink"):
        directory_digest(root)
    (root / "linkdir").unlink()
    (root / "sub").mkdir()
    (root / "sub" / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DigestError, match=r"sub/dangling: is a symlink"):
        directory_digest(root)
    (root / "sub" / "dangling").unlink()
    directory_digest(root)
    (tmp_path / "rootlink").symlink_to(root, target_is_directory=True)
    with pytest.raises(DigestError, match="symlinks are refused"):
        directory_digest(tmp_path / "rootlink")


def test_not_a_directory_and_special_files(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    with pytest.raises(DigestError, match="not a directory"):
        directory_digest(f)
    with pytest.raises(DigestError, match="not a directory"):
        directory_digest(tmp_path / "missing")
    root = make_tree(tmp_path / "m", {"a": b"a"})
    os.mkfifo(root / "pipe")
    with pytest.raises(DigestError, match="pipe: not a regular file"):
        directory_digest(root)


def test_file_digest_is_plain_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 5)
    (tmp_path / "w.bin").write_bytes(data)
    assert file_digest(tmp_path / "w.bin") == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("extra", [-1, 0, 1, READ_AHEAD_STEP - 1, READ_AHEAD_STEP,
                                   3 * READ_AHEAD_STEP + 7])
def test_file_digest_reading_ahead_is_plain_sha256(tmp_path: Path, extra: int) -> None:
    """Around the size where the second thread starts reading ahead, and around its buffer
    boundaries: every byte hashed once, in order."""
    data = os.urandom(READ_AHEAD_MIN + extra)
    (tmp_path / "w.bin").write_bytes(data)
    assert file_digest(tmp_path / "w.bin") == "sha256:" + hashlib.sha256(data).hexdigest()


def test_copy_files_digests_the_copy_as_directory_files_would(tmp_path: Path) -> None:
    """One read per byte: the copy's digests equal a separate hash of source and copy."""
    files = {**FILES, "big/w.bin": os.urandom(20 * MIB + 3), "zero": b""}  # > COPY_STEP
    src = make_tree(tmp_path / "src", files)
    (src / "emptydir" / "deeper").mkdir(parents=True)
    dst = tmp_path / "dst"
    dst.mkdir()
    copied = copy_files(src, dst, exclude=["a.txt"])
    assert copied == directory_files(src, exclude=["a.txt"]) == directory_files(dst)
    assert not (dst / "a.txt").exists()
    assert {(dst / p).read_bytes() == files[p] for p in files if p != "a.txt"} == {True}
    assert all(os.stat(dst / f.path).st_mode & 0o777 == 0o600 for f in copied)
    # nothing the digest leaves out reaches the copy: no empty directory, no excluded file
    assert not (dst / "emptydir").exists()
    with pytest.raises(FileExistsError):  # never overwrites
        copy_files(src, dst)


def test_copy_files_digest_is_of_the_bytes_written(tmp_path: Path) -> None:
    """The digest describes the copy: hash the copy again and they agree, whatever the
    source holds now."""
    src = make_tree(tmp_path / "src", {"w.bin": os.urandom(3 * MIB)})
    dst = tmp_path / "dst"
    dst.mkdir()
    (got,) = copy_files(src, dst)
    (src / "w.bin").write_bytes(b"changed after the copy")
    assert got.digest == file_digest(dst / "w.bin") != file_digest(src / "w.bin")


def test_copy_files_refuses_what_directory_digests_refuse(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"a"})
    (src / "link").symlink_to(src / "a")
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(DigestError, match="link: is a symlink"):
        copy_files(src, dst)
    assert not any(dst.iterdir())  # refused before anything is copied


def test_copy_files_falls_back_when_the_kernel_cannot_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filesystems without copy_file_range or sendfile get a plain read and write, with
    the same digests."""
    import errno

    def unsupported(*a: object) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported here")

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    monkeypatch.setattr(os, "sendfile", unsupported)
    src = make_tree(tmp_path / "src", {"w.bin": os.urandom(9 * MIB + 7), "a": b"a"})
    (tmp_path / "dst").mkdir()
    assert copy_files(src, tmp_path / "dst") == directory_files(src)
