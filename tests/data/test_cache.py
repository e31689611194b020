from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from compkit.data import open_dataset
from compkit.data.cache import build_cache, load_sample
from tests.conftest import quiet


def test_cached_sample_equals_freshly_decoded(data_copy):
    dataset = open_dataset(data_copy)
    cache = build_cache(dataset, 48, console=quiet())
    assert len(cache) == len(dataset) and cache.size == 48
    for i, sample in enumerate(dataset.samples):
        image, mask, _ = load_sample(dataset, sample, 48)
        assert np.array_equal(cache.image(i), image)
        assert np.array_equal(cache.mask(i), mask)
        assert mask.shape == (29, 48, 48) and image.shape == (48, 48, 3)


def test_built_once_and_keyed_by_settings(data_copy):
    dataset = open_dataset(data_copy)
    first = build_cache(dataset, 48, console=quiet())
    stamp = (first.folder / "images.npy").stat().st_mtime_ns
    again = build_cache(dataset, 48, console=quiet())
    assert again.folder == first.folder and (again.folder / "images.npy").stat().st_mtime_ns == stamp
    clahe = build_cache(dataset, 48, {"clip_limit": 2.0, "tile_grid": 4}, console=quiet())
    assert clahe.folder != first.folder
    assert not np.array_equal(clahe.image(0), first.image(0))
    assert np.array_equal(clahe.mask(0), first.mask(0))
    assert not [p for p in first.folder.parent.iterdir() if p.name.startswith(".")], "no staging folder left"


def test_unlabelled_split(data_copy):
    test = open_dataset(data_copy, "test")
    cache = build_cache(test, 32, console=quiet())
    assert not cache.has_masks and cache.image(0).shape == (32, 32, 3)


# --- never stale: any change to a file a sample or the dataset is read from is seen --------------------------------


def noted() -> tuple[Console, io.StringIO]:
    """A console whose output a test can read (wide: each note on one line)."""
    out = io.StringIO()
    return Console(file=out, width=400), out


def counting_reads(dataset) -> list[str]:
    """The image ids ``dataset.read_image`` decodes from now on."""
    reads: list[str] = []
    original = dataset.read_image

    def read_image(sample, intensity=None):
        reads.append(sample.image_id)
        return original(sample, intensity)

    dataset.read_image = read_image
    return reads


def rewrite_mask(path: Path, mask: np.ndarray, keep_mtime: bool = False) -> None:
    """Write ``mask`` (H, W 0/255) over ``path`` in place, uncompressed (so that any content has the same size);
    with ``keep_mtime`` the file's mtime is set back as an archive extractor or ``cp -p`` would."""
    stat = path.stat()
    ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    assert ok
    path.write_bytes(buf.tobytes())
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_rewritten_mask_file_is_re_read_and_only_its_image(fundus_copy):
    dataset = open_dataset(fundus_copy)
    first = build_cache(dataset, 64, console=quiet())
    target = fundus_copy / "train" / "HardExudate_Masks" / "0001_1.png"
    c = dataset.classes.index("HardExudate")
    position = first.position["0001_1.png"]
    assert first.mask(position)[c].sum() < 64 * 64 // 2, "the test draws a new mask covering the top half"
    corrected = np.zeros((128, 128), np.uint8)
    corrected[:64] = 255
    cv2.imwrite(str(target), corrected)
    dataset = open_dataset(fundus_copy)
    reads = counting_reads(dataset)
    console, out = noted()
    again = build_cache(dataset, 64, console=console)
    assert again.folder == first.folder
    assert reads == ["0001_1.png"], "only the changed sample is decoded again"
    assert again.mask(position)[c].sum() == 64 * 32 and again.mask(position)[c][:32].all()
    assert out.getvalue().strip() == f"cache: 1 of {len(dataset)} images changed since it was built: re-read"
    for i, sample in enumerate(dataset.samples):  # the copied entries are the right ones too
        image, mask, _ = load_sample(dataset, sample, 64)
        assert np.array_equal(again.image(i), image) and np.array_equal(again.mask(i), mask)
    assert [p.name for p in fundus_copy.joinpath(".compkit-cache").iterdir()] == [first.folder.name], (
        "no staging folders left"
    )


def test_a_same_size_rewrite_with_its_mtime_set_back_is_re_read(fundus_copy):
    target = fundus_copy / "train" / "HardExudate_Masks" / "0001_1.png"
    before = np.zeros((128, 128), np.uint8)
    rewrite_mask(target, before)
    dataset = open_dataset(fundus_copy)
    c = dataset.classes.index("HardExudate")
    first = build_cache(dataset, 64, console=quiet())
    assert not first.mask(first.position["0001_1.png"])[c].any()
    size, mtime = target.stat().st_size, target.stat().st_mtime_ns
    rewrite_mask(target, np.full((128, 128), 255, np.uint8), keep_mtime=True)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (size, mtime), "what the old key saw is unchanged"
    again = build_cache(open_dataset(fundus_copy), 64, console=quiet())
    assert again.mask(again.position["0001_1.png"])[c].all()


def test_a_hand_bone_label_json_change_is_re_read(data_copy):
    dataset = open_dataset(data_copy)
    first = build_cache(dataset, 48, console=quiet())
    sample = dataset.samples[1]
    data = json.loads(sample.label_path.read_text())
    data["annotations"] = data["annotations"][:1]  # one bone left
    sample.label_path.write_text(json.dumps(data))
    dataset = open_dataset(data_copy)
    reads = counting_reads(dataset)
    again = build_cache(dataset, 48, console=quiet())
    assert reads == [sample.image_id]
    _, mask, _ = load_sample(dataset, dataset.samples[1], 48)
    assert np.array_equal(again.mask(1), mask) and not np.array_equal(first.mask(1), mask)


def test_an_ignore_mask_added_or_changed_is_re_read(fundus_copy):
    dataset = open_dataset(fundus_copy)
    first = build_cache(dataset, 64, console=quiet())
    assert first.ignore(0) is None
    ignore = np.zeros((len(dataset.classes), 128, 128), np.uint8)
    ignore[:, :, :64] = 1  # the left half
    path = fundus_copy / "ignore" / f"{dataset.samples[0].image_id}.npy"  # the documented place
    path.parent.mkdir()
    np.save(path, np.packbits(ignore.reshape(len(dataset.classes), -1), axis=-1))
    added = build_cache(open_dataset(fundus_copy), 64, console=quiet())
    assert added.ignore(0)[:, :, :32].all() and not added.ignore(0)[:, :, 32:].any()
    assert not added.ignore(1).any()
    ignore[:] = 0
    ignore[:, :64] = 1  # the top half
    np.save(path, np.packbits(ignore.reshape(len(dataset.classes), -1), axis=-1))
    changed = build_cache(open_dataset(fundus_copy), 64, console=quiet())
    assert changed.ignore(0)[:, :32].all() and not changed.ignore(0)[:, 32:].any()


def test_a_changed_meta_table_or_description_re_reads_every_image(fundus_copy):
    dataset = open_dataset(fundus_copy)
    build_cache(dataset, 64, console=quiet())
    table = next(fundus_copy.glob("*.csv"))
    table.write_text(table.read_text() + "\n")
    dataset = open_dataset(fundus_copy)
    reads = counting_reads(dataset)
    console, out = noted()
    build_cache(dataset, 64, console=console)
    assert len(reads) == len(dataset)
    assert (
        out.getvalue().strip() == f"cache: {table.name} changed since it was built: all {len(dataset)} images re-read"
    )
    (fundus_copy / "dataset.yaml").write_text("format: masks\n")
    dataset = open_dataset(fundus_copy)
    reads = counting_reads(dataset)
    build_cache(dataset, 64, console=quiet())
    assert len(reads) == len(dataset), "a description that appears is read"
    (fundus_copy / "dataset.yaml").write_text("format: masks  # the layout as it is\n")
    dataset = open_dataset(fundus_copy)
    reads = counting_reads(dataset)
    build_cache(dataset, 64, console=quiet())
    assert len(reads) == len(dataset)


def test_the_dataset_yaml_describing_labels_is_part_of_the_key(tmp_path):
    """A described dataset's threshold lives in its dataset.yaml: changing it changes every mask."""
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(3):
        cv2.imwrite(str(root / "images" / f"{k}.png"), np.full((32, 32, 3), 40 * k, np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[:16] = 150  # anti-aliased edge
        mask[:8] = 255
        cv2.imwrite(str(root / "masks" / f"{k}.png"), mask)
    description = "splits: {train: images/*.png}\nlabels:\n  lesion: '../masks/{stem}.png'\nthreshold: %d\n"
    (root / "dataset.yaml").write_text(description % 128)
    assert build_cache(open_dataset(root), 32, console=quiet()).mask(0)[0].sum() == 16 * 32
    (root / "dataset.yaml").write_text(description % 200)
    assert build_cache(open_dataset(root), 32, console=quiet()).mask(0)[0].sum() == 8 * 32


def test_source_files_name_every_label_file(fundus_copy, data_copy):
    masks = open_dataset(fundus_copy)
    sample = masks.sample("0001_1.png")
    files = masks.source_files(sample)
    assert files[0] == sample.image_path and len(files) > 1
    assert all(p.is_file() and p.name == "0001_1.png" for p in files), "mask files, not their folder"
    assert {p.parent.name for p in files[1:]} == {f"{masks.classes[c]}_Masks" for c in masks.mask_files["0001_1.png"]}
    assert any(p.suffix == ".csv" for p in masks.dataset_files())
    hand = open_dataset(data_copy)
    assert hand.source_files(hand.samples[0]) == [hand.samples[0].image_path, hand.samples[0].label_path]
    assert hand.dataset_files() == [data_copy / "meta_data.xlsx"]


# --- a damaged cache is rebuilt with one line, never a traceback ----------------------------------------------------


def damage_truncate(folder: Path) -> str:
    path = folder / "images.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "images.npy: unreadable (mmap length is greater than file size)"


def damage_garbage_index(folder: Path) -> str:
    (folder / "index.json").write_bytes(b"\x00\x01{not json")
    return "index.json: not valid JSON"


def damage_index_fields(folder: Path) -> str:
    (folder / "index.json").write_text('{"image_ids": 3}')
    return "index.json: not a cache index"


def damage_missing_masks(folder: Path) -> str:
    (folder / "masks.npy").unlink()
    return "masks.npy: unreadable"


def damage_wrong_shape(folder: Path) -> str:
    np.save(folder / "images.npy", np.zeros((2, 8, 8, 3), np.uint8))
    return "images.npy: holds uint8 (2, 8, 8, 3), index.json says uint8"


def damage_empty_folder(folder: Path) -> str:
    for path in folder.iterdir():
        path.unlink()
    return "index.json: file not found"


@pytest.mark.parametrize(
    "damage",
    [
        damage_truncate,
        damage_garbage_index,
        damage_index_fields,
        damage_missing_masks,
        damage_wrong_shape,
        damage_empty_folder,
    ],
)
def test_a_damaged_cache_is_rebuilt_with_a_note(data_copy, damage):
    dataset = open_dataset(data_copy)
    first = build_cache(dataset, 48, console=quiet())
    folder = first.folder
    del first
    said = damage(folder)
    console, out = noted()
    cache = build_cache(open_dataset(data_copy), 48, console=console)
    lines = out.getvalue().strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith(f"cache: {folder}/")
        and said in lines[0]
        and lines[0].endswith(": rebuilt")
    ), lines
    for i, sample in enumerate(dataset.samples):
        image, mask, _ = load_sample(dataset, sample, 48)
        assert np.array_equal(cache.image(i), image) and np.array_equal(cache.mask(i), mask)
    assert (
        build_cache(open_dataset(data_copy), 48, console=console).folder == folder
        and len(out.getvalue().strip().splitlines()) == 1
    )


def test_a_reader_of_the_old_cache_keeps_working_while_it_is_rebuilt(fundus_copy):
    dataset = open_dataset(fundus_copy)
    old = build_cache(dataset, 64, console=quiet())
    before = old.mask(0).copy()
    cv2.imwrite(str(dataset.source_files(dataset.samples[0])[1]), np.full((128, 128), 255, np.uint8))
    new = build_cache(open_dataset(fundus_copy), 64, console=quiet())
    assert np.array_equal(old.mask(0), before) and not np.array_equal(new.mask(0), before)
    assert np.array_equal(old.image(1), new.image(1))


def test_cache_of_read_only_data_goes_to_the_users_cache(data_copy, tmp_path, monkeypatch):
    from compkit.data.cache import cache_root
    from tests.layouts import read_only_modes

    monkeypatch.setenv("COMPKIT_CACHE", str(tmp_path / "home"))
    dataset = open_dataset(data_copy)
    assert cache_root(dataset) == data_copy / ".compkit-cache"
    with read_only_modes(data_copy):
        assert cache_root(dataset).parent == tmp_path / "home"
        build_cache(dataset, 32, console=quiet())
        assert not (data_copy / ".compkit-cache").exists()


def test_source_signatures_per_sample_and_of_the_dataset(data_copy):
    from compkit.data.cache import SourceSignatures, file_signatures

    dataset = open_dataset(data_copy)
    signatures = SourceSignatures.of(dataset)
    assert len(signatures.samples) == len(dataset.samples)
    assert signatures.samples[0] == file_signatures(dataset.source_files(dataset.samples[0]), dataset.root)
    assert signatures.dataset == file_signatures(dataset.dataset_files(), dataset.root)
    cache = build_cache(dataset, 32, console=quiet())
    assert (cache.sources, cache.dataset_sources) == (signatures.samples, signatures.dataset)
