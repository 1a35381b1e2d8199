"""gguf_io.shared_readers: one parse per file version inside a library call, a fresh
reader for a file written again, and nothing shared outside the block."""

from __future__ import annotations

import shutil

from swgguf.errors import SwggufError
from swgguf.formats import gguf_io


def test_one_reader_per_file_inside_the_block(tiny_f32):
    with gguf_io.shared_readers():
        first = gguf_io.open_gguf(tiny_f32)
        assert gguf_io.open_gguf(str(tiny_f32)) is first
        with gguf_io.shared_readers():  # nested: the outer block's readers
            assert gguf_io.open_gguf(tiny_f32) is first
    assert gguf_io.open_gguf(tiny_f32) is not first
    assert gguf_io.open_gguf(tiny_f32) is not gguf_io.open_gguf(tiny_f32)


def test_a_file_written_again_is_read_again(tiny_f32, tmp_path):
    path = tmp_path / "model.gguf"
    shutil.copyfile(tiny_f32, path)
    with gguf_io.shared_readers():
        before = gguf_io.open_gguf(path)
        tmp = tmp_path / "model.gguf.tmp"  # how swgguf writes: a new file, renamed over the old
        shutil.copyfile(tiny_f32, tmp)
        tmp.replace(path)
        after = gguf_io.open_gguf(path)
        assert after is not before
        assert [t.name for t in after.tensors] == [t.name for t in before.tensors]


def test_the_block_keeps_only_the_last_readers(tiny_f32, tmp_path):
    paths = []
    for i in range(gguf_io.SHARED_READERS_MAX + 1):
        paths.append(tmp_path / f"m{i}.gguf")
        shutil.copyfile(tiny_f32, paths[-1])
    with gguf_io.shared_readers():
        first = gguf_io.open_gguf(paths[0])
        for p in paths[1:]:
            gguf_io.open_gguf(p)
        assert gguf_io.open_gguf(paths[-1]) is gguf_io.open_gguf(paths[-1])
        assert gguf_io.open_gguf(paths[0]) is not first  # the oldest was dropped


def test_errors_still_name_the_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 8)
    with gguf_io.shared_readers():
        for path, words in ((bad, "not a readable GGUF file"), (tmp_path / "missing.gguf", "no such file")):
            try:
                gguf_io.open_gguf(path)
            except SwggufError as err:
                assert words in str(err) and str(path) in str(err)
            else:
                raise AssertionError(f"{path} was accepted")
