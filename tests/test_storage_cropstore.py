"""The LMDB crop store: batch writes, map growth, readers under fork/spawn, a full disk."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from vidmine.images import decode_image, encode_image
from vidmine.storage.cropstore import CropReader, ShardWriter
from vidmine.storage.errors import MissingCropError, ShardError, StoreFullError


def _items(n: int, size: int = 4096, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    return [(f"k{i}", rng.bytes(size)) for i in range(n)]


def test_roundtrip_across_shards_and_sealing(tmp_path):
    a, b = ShardWriter(tmp_path, "a"), ShardWriter(tmp_path, "b")
    img = np.random.default_rng(1).integers(0, 255, (40, 60, 3), np.uint8)
    a.put_many([("x", encode_image(img, fmt="png"))])
    b.put_many(_items(10))
    a.seal(), b.seal()
    reader = CropReader(tmp_path)
    got = reader.get_many([("b", "k3"), ("a", "x"), ("b", "k0")])
    np.testing.assert_array_equal(decode_image(got[1]), img)  # PNG is lossless
    assert got[0] == _items(10)[3][1] and got[2] == _items(10)[0][1]
    with pytest.raises(MissingCropError, match="missing from shard b"):
        reader.get_many([("b", "nope")])
    with pytest.raises(ShardError, match="not found"):
        reader.get("c", "x")
    with pytest.raises(ShardError, match="sealed"):
        ShardWriter(tmp_path, "a")


def test_one_writer_per_shard(tmp_path):
    first = ShardWriter(tmp_path, "s")
    other_process = subprocess.run(
        [sys.executable, "-c", "import sys; from storage.cropstore import ShardWriter; "
         "ShardWriter(sys.argv[1], 's')", str(tmp_path)], capture_output=True, text=True)
    assert "already has a writer" in other_process.stderr
    first.close()
    ShardWriter(tmp_path, "s").close()  # free again once the first writer is gone


def test_map_grows_on_demand_while_a_reader_reads(tmp_path):
    writer = ShardWriter(tmp_path, "grow", initial_map_size=64 << 10)
    writer.put_many([("first", b"1" * 1000)])
    # A reader in another process opens the shard at its small size, then reads again
    # after the writer has grown the map many times under it.
    script = textwrap.dedent(f"""
        import sys
        from vidmine.storage.cropstore import CropReader
        r = CropReader({str(tmp_path)!r})
        assert r.get("grow", "first") == b"1" * 1000
        print("opened", flush=True)
        sys.stdin.readline()
        print(len(r.get("grow", "b9-k49")), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "opened"
    batches = [[(f"b{b}-k{i}", v) for i, (_, v) in enumerate(_items(50, 20_000, seed=b))]
               for b in range(10)]
    for batch in batches:
        writer.put_many(batch)
    assert writer.env.info()["map_size"] >= 10 * 50 * 20_000 > 64 << 10
    out, _ = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0 and out.strip() == "20000"
    assert CropReader(tmp_path).get("grow", "b9-k49") == batches[9][49][1]


class _CropDataset(Dataset):
    def __init__(self, reader: CropReader, refs):
        self.reader, self.refs = reader, refs

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        return torch.from_numpy(decode_image(self.reader.get(*self.refs[i])).copy())


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_reader_inside_dataloader_workers(tmp_path, start_method):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (16, 16, 3), np.uint8) for _ in range(24)]
    writer = ShardWriter(tmp_path, "s")
    writer.put_many([(f"c{i}", encode_image(img, fmt="png")) for i, img in enumerate(images)])
    writer.seal()
    reader = CropReader(tmp_path)
    reader.get("s", "c0")  # the parent has an open environment before workers start
    ds = _CropDataset(reader, [("s", f"c{i}") for i in range(24)])
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=start_method)
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, np.stack(images))


_FULL_DISK_SCRIPT = textwrap.dedent("""
    import signal, resource, sys, numpy as np
    from vidmine.storage.cropstore import ShardWriter
    from vidmine.storage.errors import StoreFullError
    if sys.argv[2] == "rlimit":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))
    w = ShardWriter(sys.argv[1], "full", initial_map_size=1 << 20)
    rng = np.random.default_rng(0)
    done = 0
    try:
        for batch in range(1000):
            w.put_many([(f"b{batch}-{i}", rng.bytes(50_000)) for i in range(10)])
            done = batch + 1
    except StoreFullError as exc:
        print("FULL", done, exc)
        sys.exit(0)
    print("NEVER FULL")
    sys.exit(1)
""")


def _fill_until_full(shard_root, mode):
    out = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(shard_root), mode],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    first_line = out.stdout.strip().splitlines()[-1]
    assert first_line.startswith("FULL") and "\n" not in first_line
    done = int(first_line.split()[1])
    assert done > 0
    # What was committed before the disk filled is intact and readable.
    reader = CropReader(shard_root)
    rng = np.random.default_rng(0)
    expected = [rng.bytes(50_000) for _ in range(10)]
    assert reader.get_many([("full", f"b0-{i}") for i in range(10)]) == expected
    assert len(reader.get("full", f"b{done - 1}-9")) == 50_000
    return first_line


def test_full_disk_via_file_size_limit(tmp_path):
    line = _fill_until_full(tmp_path, "rlimit")
    assert "disk full writing shard full" in line


def test_full_disk_on_a_small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the rlimit test covers it")
    try:
        line = _fill_until_full(mnt, "tmpfs")
        assert "disk full writing shard full" in line
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_store_full_error_names_the_limit(tmp_path):
    writer = ShardWriter(tmp_path, "cap", initial_map_size=64 << 10, max_map_size=256 << 10)
    with pytest.raises(StoreFullError, match="size limit"):
        writer.put_many(_items(100, 8192))
    # The failed batch left nothing behind; the shard still works.
    writer.put_many([("ok", b"x")])
    assert CropReader(tmp_path).get("cap", "ok") == b"x"


