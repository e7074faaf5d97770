"""Readers for paired UDC datasets behind one interface, :class:`PairedDataset`.

Each yields :class:`Pair` objects: ``lq`` (degraded) and ``gt`` (or ``None``) as float32
HxWx3 RGB in [0, 1]. :class:`FolderPairDataset` reads image folders, :class:`UDC2020MatDataset`
the UDC 2020 challenge ``.mat`` files, :class:`DiscNetNpyDataset` DISCNet-style ``.npy`` HDR
pairs (tone-mapped on read); :func:`open_paired_dataset` picks one from what a path is.
"""

from __future__ import annotations

import abc
import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from udc_edge.core.errors import DataError, InputError, UsageError
from udc_edge.data.images import IMAGE_SUFFIXES, list_images, read_image, to_rgb
from udc_edge.data.tonemap import tone_map

LQ_DIR_NAMES = ("lq", "input")  # matched case-insensitively
GT_DIR_NAMES = ("gt",)
ACCEPTED_LAYOUTS = (
    "a folder with lq/ + gt/ (or input/ + GT/) subfolders of images",
    "a folder with input/ + GT/ subfolders of DISCNet .npy HDR arrays (optional psf.npy)",
    "a UDC 2020 challenge .mat file such as poled_val_display.mat",
    "a plain folder of images (no ground truth)",
)
_MAX_LISTED = 5


@dataclass(frozen=True, eq=False)
class Pair:
    """One sample: ``lq`` and ``gt`` (or ``None``) as float32 HxWx3 in [0, 1]."""

    name: str
    lq: np.ndarray
    gt: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)


class PairedDataset(abc.ABC):
    """A sized, indexable collection of :class:`Pair` with stable names."""

    format: str = "abstract"
    root: Path
    _names: tuple[str, ...]
    _gt: Any = None

    @property
    def names(self) -> tuple[str, ...]:
        """Pair names in index order."""
        return self._names

    @property
    def has_gt(self) -> bool:
        """Whether pairs carry ground truth."""
        return self._gt is not None

    @abc.abstractmethod
    def _load(self, index: int) -> Pair:
        """Load pair ``index`` (already in range)."""

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index: int) -> Pair:
        i, n = operator.index(index), len(self)
        if not -n <= i < n:
            raise IndexError(f"pair index {i} is out of range for {n} pairs")
        return self._load(i % n)

    def __iter__(self) -> Iterator[Pair]:
        for i in range(len(self)):
            yield self._load(i)

    def validate(self) -> None:
        """Load every pair once, so bad files fail now rather than mid-run."""
        for i in range(len(self)):
            self._load(i)

    def describe(self) -> dict[str, Any]:
        """Format, root, count and whether there is ground truth, for reports."""
        return {"format": self.format, "root": str(self.root), "count": len(self),
                "has_gt": self.has_gt}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, count={len(self)}, has_gt={self.has_gt})"


def _existing(path: str | os.PathLike, what: str, want_dir: bool) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist", "check the path")
    if want_dir and not p.is_dir():
        raise InputError(f"{what} {p} is not a folder", "give the dataset folder")
    if not want_dir and not p.is_file():
        raise InputError(f"{what} {p} is not a file", "give the file itself, not a folder")
    return p


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _find_subdir(root: Path, names: tuple[str, ...]) -> Path | None:
    found = sorted(d for d in root.iterdir() if d.is_dir() and d.name.lower() in names)
    if len(found) > 1:
        names_found = ", ".join(d.name for d in found)
        raise InputError(f"dataset folder {root} has both {names_found}", "keep only one of them")
    return found[0] if found else None


def _stem_map(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        hint = f"accepted suffixes: {' '.join(suffixes)}"
        if suffixes == IMAGE_SUFFIXES and any(folder.glob("*.npy")):
            hint += "; it holds .npy files: open it with DiscNetNpyDataset / open_paired_dataset"
        kind = "images" if suffixes == IMAGE_SUFFIXES else f"{'/'.join(suffixes)} files"
        raise DataError(f"no {kind} were found in {folder}", hint)
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise DataError(f"{folder} has two files named {p.stem!r}: {stems[p.stem].name} and "
                            f"{p.name}", "pairs are matched by name without suffix: keep one")
        stems[p.stem] = p
    return stems


def _check_names(lq: dict[str, Path], gt: dict[str, Path], lq_dir: Path, gt_dir: Path) -> None:
    problems = [f"{len(only)} files in {a} have no match in {b}: {_listing(only)}"
                for only, a, b in ((sorted(set(lq) - set(gt)), lq_dir, gt_dir),
                                   (sorted(set(gt) - set(lq)), gt_dir, lq_dir)) if only]
    if problems:
        raise DataError("unpaired files: " + "; ".join(problems), "pairs are matched by file "
                        "name without suffix: add or remove files so both sides match")


def _check_same_size(name: str, lq_shape: tuple, gt_shape: tuple, lq_src: Any, gt_src: Any) -> None:
    if tuple(lq_shape[:2]) != tuple(gt_shape[:2]):
        (lh, lw), (gh, gw) = lq_shape[:2], gt_shape[:2]
        raise DataError(f"pair {name!r}: lq {lq_src} is {lh}x{lw} (HxW) but gt {gt_src} is "
                        f"{gh}x{gw}", "crop or resize so both images of a pair have the same size")


class _StemMatched(PairedDataset):
    """Set-up shared by folder readers: ``lq|input/`` and ``gt|GT/`` matched by file stem."""

    _suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    _plain_folder_ok = True  # a folder of files without subfolders is an lq-only set

    def __init__(self, root: str | os.PathLike):
        self.root = _existing(root, "dataset folder", want_dir=True)
        lq_dir = _find_subdir(self.root, LQ_DIR_NAMES)
        gt_dir = _find_subdir(self.root, GT_DIR_NAMES)
        if lq_dir is None and (gt_dir is not None or not self._plain_folder_ok):
            raise InputError(f"dataset folder {self.root} has no lq/ or input/ folder",
                             "put the degraded files in lq/ (or input/), ground truth in gt/ (or GT/)")
        self.lq_dir, self.gt_dir = lq_dir or self.root, gt_dir
        self._lq = _stem_map(self.lq_dir, self._suffixes)
        self._gt = _stem_map(gt_dir, self._suffixes) if gt_dir is not None else None
        if self._gt is not None:
            _check_names(self._lq, self._gt, self.lq_dir, gt_dir)
        self._names = tuple(sorted(self._lq))

    def describe(self) -> dict[str, Any]:
        gt_dir = str(self.gt_dir) if self.gt_dir else None
        return {**super().describe(), "lq_dir": str(self.lq_dir), "gt_dir": gt_dir}


class FolderPairDataset(_StemMatched):
    """Images in ``root/lq`` + ``root/gt`` or ``root/input`` + ``root/GT``, or a plain folder.

    Names are matched by file stem when built; images are read on access (with
    :func:`read_image`'s conversions: grayscale to RGB, alpha dropped, 16-bit scaled) and
    a pair's sizes checked then, or for all pairs by :meth:`validate` (headers only).
    """

    format = "folder"

    def _load(self, index: int) -> Pair:
        name = self._names[index]
        lq_path = self._lq[name]
        lq, lq_info = read_image(lq_path)
        meta: dict[str, Any] = {"lq_path": str(lq_path), "lq_bit_depth": lq_info.bit_depth,
                                "lq_channels": lq_info.channels}
        gt = None
        if self._gt is not None:
            gt_path = self._gt[name]
            gt, gt_info = read_image(gt_path)
            _check_same_size(name, lq.shape, gt.shape, lq_path, gt_path)
            meta.update(gt_path=str(gt_path), gt_bit_depth=gt_info.bit_depth,
                        gt_channels=gt_info.channels)
        return Pair(name, lq, gt, meta)

    def validate(self) -> None:
        """Check every file is a readable image and every pair has one size (headers only)."""
        for name in self._names:
            lq_size = _image_size(self._lq[name])
            if self._gt is not None:
                gt_size = _image_size(self._gt[name])
                _check_same_size(name, lq_size, gt_size, self._lq[name], self._gt[name])


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header; falls back to a full read for a precise error."""
    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except (UnidentifiedImageError, OSError, SyntaxError):  # read_image words the error
        arr, _ = read_image(path)
        return arr.shape[0], arr.shape[1]


class UDC2020MatDataset(PairedDataset):
    """The UDC 2020 challenge P-OLED/T-OLED ``.mat`` files: (N, H, W, 3) uint8 stacks.

    E.g. ``poled_val_display.mat`` (key ``val_display``) with ``poled_val_gt.mat`` (key
    ``val_gt``). The single 4-D variable is used unless ``lq_key``/``gt_key`` name one.
    MATLAB v7.3 (HDF5) files are not read. Pairs are named ``0000``, ``0001``, ...
    """

    format = "udc2020-mat"

    def __init__(self, lq_mat: str | os.PathLike, gt_mat: str | os.PathLike | None = None, *,
                 lq_key: str | None = None, gt_key: str | None = None):
        self.root = self.lq_path = _existing(lq_mat, ".mat file", want_dir=False)
        self._lq, self.lq_key = _load_mat_stack(self.lq_path, lq_key)
        self.gt_path: Path | None = None
        self.gt_key: str | None = None
        if gt_mat is not None:
            self.gt_path = _existing(gt_mat, "ground-truth .mat file", want_dir=False)
            self._gt, self.gt_key = _load_mat_stack(self.gt_path, gt_key)
            if self._gt.shape[:3] != self._lq.shape[:3]:
                (n, h, w), (gn, gh, gw) = self._lq.shape[:3], self._gt.shape[:3]
                raise DataError(f"{self.lq_path} holds {n} images of {h}x{w} but {self.gt_path} "
                                f"holds {gn} of {gh}x{gw}", "give the ground truth of the same split")
        self._names = tuple(f"{i:04d}" for i in range(self._lq.shape[0]))

    def _load(self, index: int) -> Pair:
        lq = _mat_to_unit(self._lq[index])
        gt = None if self._gt is None else _mat_to_unit(self._gt[index])
        meta = {"index": index, "lq_path": str(self.lq_path),
                "gt_path": str(self.gt_path) if self.gt_path else None}
        return Pair(self._names[index], lq, gt, meta)

    def describe(self) -> dict[str, Any]:
        gt_path = str(self.gt_path) if self.gt_path else None
        return {**super().describe(), "lq_key": self.lq_key, "gt_path": gt_path, "gt_key": self.gt_key}


def _load_mat_stack(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    import scipy.io
    from scipy.io.matlab import MatReadError, matfile_version

    not_mat = ("give a MATLAB .mat file (v5/v7), such as the UDC 2020 poled_val_display.mat")
    try:
        major, _ = matfile_version(str(path))
    except (ValueError, MatReadError, OSError) as exc:
        raise InputError(f"cannot read {path} as a MATLAB .mat file: {exc}", not_mat) from exc
    if major == 2:
        raise InputError(f"{path} is a MATLAB v7.3 file (HDF5), which this reader does not read",
                         "re-save it in MATLAB with save(..., '-v7'), or install h5py and convert it")
    try:
        variables = scipy.io.whosmat(str(path))
    except (ValueError, MatReadError, OSError, NotImplementedError) as exc:
        raise InputError(f"cannot read {path} as a MATLAB .mat file: {exc}", not_mat) from exc
    found = ", ".join(f"{n} {'x'.join(map(str, s))} {c}" for n, s, c in variables) or "none"
    if key is None:
        stacks = [n for n, shape, _ in variables if not n.startswith("__") and len(shape) == 4]
        if len(stacks) != 1:
            what = "no 4-D image stack" if not stacks else "several 4-D image stacks"
            raise DataError(f"{path} holds {what} (variables: {found})",
                            "name the variable to read (lq_key / gt_key)")
        key = stacks[0]
    elif key not in {n for n, _, _ in variables}:
        raise InputError(f"{path} has no variable {key!r} (variables: {found})",
                         "give one of the variables listed")
    try:
        arr = scipy.io.loadmat(str(path), variable_names=[key])[key]
    except (ValueError, MatReadError, OSError, TypeError) as exc:
        raise InputError(f"cannot read variable {key!r} from {path}: {exc}", not_mat) from exc
    if arr.ndim != 4 or arr.shape[3] not in (1, 3, 4) or arr.shape[0] == 0:
        raise DataError(f"{path} variable {key!r} has shape {arr.shape}",
                        "expected a non-empty (N, H, W, 3) image stack")
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path} variable {key!r} has dtype {arr.dtype}",
                        "expected uint8 (or uint16) images, as in the UDC 2020 files")
    return arr, key


def _mat_to_unit(arr: np.ndarray) -> np.ndarray:
    return to_rgb(arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max))


class DiscNetNpyDataset(_StemMatched):
    """DISCNet-style synthetic pairs: ``root/input/*.npy`` (+ ``root/GT/*.npy``), linear HDR.

    Arrays are HxWx3 linear radiance that may exceed 1. On read both sides are converted
    to the network domain with :func:`tone_map` (``x / (x + 0.25)``), so pairs are in
    [0, 1) like the other readers; ``meta["hdr_max"]`` (and ``gt_hdr_max``) keep the peak
    before tone mapping. The PSF (``psf`` argument, else ``root/psf.npy``) is ``.psf``.
    """

    format = "discnet-npy"
    _suffixes = (".npy",)
    _plain_folder_ok = False

    def __init__(self, root: str | os.PathLike, psf: str | os.PathLike | None = None):
        super().__init__(root)
        default = self.root / "psf.npy"
        if psf is not None:
            self.psf_path: Path | None = _existing(psf, "PSF file", want_dir=False)
        else:
            self.psf_path = default if default.is_file() else None
        self.psf = _load_hwc3(self.psf_path, "PSF") if self.psf_path is not None else None

    def _load(self, index: int) -> Pair:
        name = self._names[index]
        lq_hdr = _load_hwc3(self._lq[name], "HDR input")
        meta: dict[str, Any] = {"lq_path": str(self._lq[name]), "hdr_max": float(lq_hdr.max()),
                                "tone_mapped": True}
        gt = None
        if self._gt is not None:
            gt_hdr = _load_hwc3(self._gt[name], "HDR ground truth")
            _check_same_size(name, lq_hdr.shape, gt_hdr.shape, self._lq[name], self._gt[name])
            gt = tone_map(gt_hdr)
            meta.update(gt_path=str(self._gt[name]), gt_hdr_max=float(gt_hdr.max()))
        return Pair(name, tone_map(lq_hdr), gt, meta)

    def describe(self) -> dict[str, Any]:
        psf_shape = list(self.psf.shape) if self.psf is not None else None
        return {**super().describe(), "tone_map": "x / (x + 0.25)",
                "psf": str(self.psf_path) if self.psf_path else None, "psf_shape": psf_shape}


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as a NumPy .npy array: {exc}",
                         "save it with numpy.save (plain numeric array, no pickled objects)") from exc
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise InputError(f"{path} is an .npz archive, not an .npy array",
                         "save each array with numpy.save")
    if arr.dtype.kind not in "uif":
        raise DataError(f"{path} has dtype {arr.dtype}", "expected a numeric (float) array")
    return arr


def _load_hwc3(path: Path, what: str) -> np.ndarray:
    arr = _load_npy(path)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"{what} {path} has shape {arr.shape}", "expected an HxWx3 RGB array")
    if not np.isfinite(arr).all() or (what == "PSF" and arr.min() < 0):
        raise DataError(f"{what} {path} has NaN, Inf or (PSF) negative values",
                        "regenerate or repair the file")
    return arr.astype(np.float32, copy=False)


def open_paired_dataset(path: str | os.PathLike, *, psf: str | os.PathLike | None = None,
                        gt: str | os.PathLike | None = None) -> PairedDataset:
    """Open ``path`` with the reader its layout calls for (see ``ACCEPTED_LAYOUTS``).

    For a ``.mat`` file the ground truth is ``gt``, else the file named with ``display``
    replaced by ``gt`` when it exists. ``psf`` applies to DISCNet ``.npy`` sets only.
    """
    p = Path(path)
    kind = _layout_of(p)
    if psf is not None and kind != "npy":
        raise UsageError(f"a PSF was given for {p}, which is not a DISCNet .npy dataset",
                         "leave out the PSF")
    if gt is not None and kind != "mat":
        raise UsageError(f"a ground-truth file was given for {p}, which is not a .mat file",
                         "a separate ground-truth file applies only to .mat datasets")
    if kind == "mat":
        candidate = p.with_name(p.name.replace("display", "gt"))
        if gt is None and candidate != p and candidate.is_file():
            gt = candidate
        return UDC2020MatDataset(p, gt)
    return DiscNetNpyDataset(p, psf=psf) if kind == "npy" else FolderPairDataset(p)


def _layout_of(p: Path) -> str:
    """The reader ``p`` needs: ``mat``, ``npy`` or ``folder``; else InputError with the layouts."""
    if not p.exists():
        raise InputError(f"dataset {p} does not exist", "check the path")
    if p.is_file() and p.suffix.lower() == ".mat":
        return "mat"
    layouts = "accepted layouts: " + "; ".join(ACCEPTED_LAYOUTS)
    if not p.is_dir():
        raise InputError(f"dataset {p} is not a folder or a .mat file", layouts)
    lq_dir = _find_subdir(p, LQ_DIR_NAMES)
    if lq_dir is not None:
        suffixes = {f.suffix.lower() for f in lq_dir.iterdir() if f.is_file()}
        return "npy" if ".npy" in suffixes and not suffixes & set(IMAGE_SUFFIXES) else "folder"
    if _find_subdir(p, GT_DIR_NAMES) is not None or not any(p.iterdir()) or list_images(p):
        return "folder"  # FolderPairDataset explains a gt-only or empty folder
    raise InputError(f"dataset folder {p} holds no images and no lq/gt or input/GT folders",
                     layouts)
