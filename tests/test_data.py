import gzip
import json
import shutil

import numpy as np
import pytest
import torch

from fixtures import write_fashion_mnist, write_idx
from kdlab.config import AugmentConfig
from kdlab.data import dataset_names, load
from kdlab.data.fetch import ChecksumError, MissingDataError, fetch, md5_of
from kdlab.data.idx import FASHION_MNIST, CorruptDataError, read_idx
from kdlab.data.pipeline import TensorLoader, random_crop, rotate
from kdlab.data.split import make_split, read_manifest, write_manifest


@pytest.fixture
def fmnist(tmp_path):
    src = tmp_path / "src"
    md5 = write_fashion_mnist(src, n_train=300, n_test=100)
    return src, md5


def test_idx_roundtrip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", a)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), a)


def test_load_shapes_dtypes_labels(tmp_path, fmnist):
    src, md5 = fmnist
    fetch("fashion_mnist", tmp_path / "raw", source_dir=src, md5_overrides=md5, log=lambda _: 0)
    x, y = load("fashion_mnist", tmp_path / "raw", "train")
    assert x.shape == (300, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (300,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9
    xt, _ = load("fashion_mnist", tmp_path / "raw", "test")
    assert len(xt) == 100
    with pytest.raises(ValueError, match="no split 'val'"):
        load("fashion_mnist", tmp_path / "raw", "val")


def test_truncated_file_is_reported(tmp_path, fmnist):
    src, _ = fmnist
    raw = gzip.decompress((src / "train-images-idx3-ubyte.gz").read_bytes())
    with gzip.open(tmp_path / "t.gz", "wb") as fh:
        fh.write(raw[:-100])
    with pytest.raises(CorruptDataError, match="the header promises 235200"):
        read_idx(tmp_path / "t.gz")
    (tmp_path / "cut.gz").write_bytes((src / "train-images-idx3-ubyte.gz").read_bytes()[:500])
    with pytest.raises(CorruptDataError, match="cannot be read"):
        read_idx(tmp_path / "cut.gz")


def test_checksum_mismatch_stops(tmp_path, fmnist):
    src, md5 = fmnist
    bad = dict(md5, **{"train-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz: md5 .* != 0000"):
        fetch("fashion_mnist", tmp_path / "raw", source_dir=src, md5_overrides=bad, log=lambda _: 0)
    # Without overrides the fixture is checked against the published checksums and refused.
    with pytest.raises(ChecksumError, match="matches neither the published 8d4fb7e6"):
        fetch("fashion_mnist", tmp_path / "raw2", source_dir=src, log=lambda _: 0)


def test_missing_file_says_how_to_get_it(tmp_path, fmnist):
    src, md5 = fmnist
    (src / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingDataError, match="has no t10k-labels-idx1-ubyte.gz"):
        fetch("fashion_mnist", tmp_path / "raw", source_dir=src, md5_overrides=md5, log=lambda _: 0)
    with pytest.raises(
        MissingDataError,
        match="mnist/train-images-idx3-ubyte.gz is missing. To get it: run with internet",
    ):
        fetch("mnist", tmp_path / "raw", allow_download=False, log=lambda _: 0)


def test_regzipped_copy_verified_by_contents(tmp_path, monkeypatch):
    """A copy gzipped differently (as Debian's) passes on the md5 of what it holds."""
    import dataclasses

    from kdlab.data import RawFile
    from kdlab.data.fetch import verify

    payload = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc"
    (tmp_path / "a.gz").write_bytes(gzip.compress(payload, mtime=1))
    import hashlib

    spec = RawFile("a.gz", "f" * 32, hashlib.md5(payload).hexdigest())
    assert verify(tmp_path / "a.gz", spec) == "content md5"
    with pytest.raises(ChecksumError):
        verify(tmp_path / "a.gz", dataclasses.replace(spec, content_md5="0" * 32))


@pytest.mark.skipif(
    not all(
        (shutil.os.path.exists(f"/usr/share/datasets/fashion-mnist/{f.name}"))
        for f in FASHION_MNIST.files
    ),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_debian_package_files_pass_verification():
    for f in FASHION_MNIST.files:
        path = shutil.os.path.join("/usr/share/datasets/fashion-mnist", f.name)
        assert md5_of(path, gunzip=True) == f.content_md5


def test_split_reproducible_and_noise_exact(tmp_path):
    labels = torch.arange(1000) % 10
    a = make_split(labels, 10, seed=3, val_size=100, subset=600, label_noise=0.05)
    b = make_split(labels, 10, seed=3, val_size=100, subset=600, label_noise=0.05)
    c = make_split(labels, 10, seed=4, val_size=100, subset=600, label_noise=0.05)
    assert torch.equal(a.train, b.train) and torch.equal(a.noisy, b.noisy)
    assert not torch.equal(a.train, c.train)
    assert len(a.train) == 500 and len(a.val) == 100
    assert len(set(a.train.tolist()) & set(a.val.tolist())) == 0
    assert len(a.noisy) == 25  # 5% of 500, exactly
    assert bool((a.labels[a.noisy] != labels[a.noisy]).all())  # never flipped to itself
    untouched = torch.ones(1000, dtype=torch.bool)
    untouched[a.noisy] = False
    assert torch.equal(a.labels[untouched], labels[untouched])
    assert set(a.noisy.tolist()) <= set(a.train.tolist())  # validation labels stay clean
    write_manifest(tmp_path / "m.json", a, labels, {"seed": 3})
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_noisy"] == 25 and sum(r[1] != r[2] for r in m["noisy"]) == 25
    back = read_manifest(tmp_path / "m.json", labels)
    assert torch.equal(back.labels, a.labels) and torch.equal(back.val, a.val)


def test_split_rejects_bad_sizes():
    labels = torch.arange(100) % 10
    with pytest.raises(ValueError, match="val_size = 100 leaves no training images"):
        make_split(labels, 10, 0, val_size=100)
    with pytest.raises(ValueError, match="subset = 200 is larger"):
        make_split(labels, 10, 0, val_size=10, subset=200)


def _loader(aug, seed=0, size=28):
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    return TensorLoader(
        images,
        torch.arange(50) % 10,
        torch.arange(50),
        16,
        size,
        (0.5,),
        (0.25,),
        augment=aug,
        shuffle=True,
        seed=seed,
    )


def test_pipeline_shapes_determinism_and_normalisation():
    torch.manual_seed(0)
    aug = AugmentConfig(hflip=True, rotation=15, crop_padding=2)
    ld = _loader(aug, size=32)
    first = [b.x.clone() for b in ld]
    again = [b.x.clone() for b in ld]
    assert [tuple(x.shape) for x in first] == [(16, 1, 32, 32)] * 3 + [(2, 1, 32, 32)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ld.set_epoch(1)
    assert not torch.equal(next(iter(ld)).x, first[0])
    plain = TensorLoader(ld.images, ld.labels, torch.arange(4), 4, 28, (0.5,), (0.25,))
    b = next(iter(plain))
    expected = (ld.images[:4].float() / 255 - 0.5) / 0.25
    assert torch.allclose(b.x, expected) and not bool(b.flipped.any())


def test_flip_mask_matches_images():
    aug = AugmentConfig(hflip=True, rotation=0.0, crop_padding=0)
    ld = _loader(aug)
    for b in ld:
        raw = (ld.images[b.index].float() / 255 - 0.5) / 0.25
        expected = torch.where(b.flipped.view(-1, 1, 1, 1), raw.flip(-1), raw)
        assert torch.allclose(b.x, expected)
    assert 0 < sum(int(b.flipped.sum()) for b in ld) < 50


def test_random_crop_is_a_shifted_window():
    # Several channels and a non-square image: the flattened gather must keep rows apart.
    x = torch.arange(4 * 3 * 5 * 7, dtype=torch.float32).reshape(4, 3, 5, 7) + 1
    g = torch.Generator().manual_seed(1)
    out = random_crop(x, 2, g)
    g = torch.Generator().manual_seed(1)
    oy = torch.randint(0, 5, (4,), generator=g)
    ox = torch.randint(0, 5, (4,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    assert out.shape == x.shape
    for i in range(4):
        window = padded[i, :, oy[i] : oy[i] + 5, ox[i] : ox[i] + 7]
        assert torch.equal(out[i], window)
    assert (out == 0).any()  # some window reaches into the zero padding


def test_rotation_zero_is_identity_and_keeps_shape():
    x = torch.rand(3, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(rotate(x, 0, g), x)
    assert rotate(x, 15, g).shape == x.shape


def test_registry_lists_datasets():
    assert {"fashion_mnist", "mnist"} <= set(dataset_names())
