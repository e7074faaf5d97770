"""``udc-edge bundle``: everything a device (e.g. a Jetson) needs to build and verify its own
engines, without PyTorch: the ONNX, a Q/DQ ONNX per target, the calibration cache, a few
calibration images, verification images with the reference's stored outputs, a manifest
with every file's sha256, and a README with the exact on-device commands.

A bundle is a folder or a ``.tar.gz``; opening one checks every file against the manifest
and refuses a missing or altered file.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from udc_edge.core.backends import QDQ_TARGETS, Backend
from udc_edge.core.errors import DataError, InputError
from udc_edge.core.fileio import (
    atomic_dir,
    atomic_path,
    check_output,
    new_work_dir,
    sha256_file,
    work_dir,
    write_json_atomic,
    write_text_atomic,
)
from udc_edge.core.progress import Advance, noop

BUNDLE_FORMAT = "udc-edge-bundle/1"

README = """# udc-edge bundle: {name}

Built on {host} with udc-edge {version} ({date}). Build the engines on the device itself:
TensorRT engines are tied to the GPU and the TensorRT version (JetPack 5.1 = TensorRT 8.5,
JetPack 6.x = 10.3; TensorRT 11 builds every network strongly typed, so FP16 comes from an
FP16-typed ONNX and INT8 from the Q/DQ ONNX here; no implicit calibration anywhere).

```bash
pip install "udc-edge[trt]"          # on the device: no PyTorch is installed or needed for these steps
udc-edge build --bundle {bundle} --backend trt --precision fp16 --out restorer-fp16.engine
udc-edge build --bundle {bundle} --backend trt --precision int8 --out restorer-int8.engine
udc-edge verify --bundle {bundle} --engine restorer-int8.engine --report verify-int8
udc-edge bench restorer-fp16.engine restorer-int8.engine --shape 1x3x512x512 --report bench
udc-edge restore restorer-int8.engine photos/ --out restored    # your own images, any size
```

On a CPU-only device install `pip install "udc-edge[runtime]"` and use `--backend ort` (INT8
then uses `qdq-cpu.onnx`).

Files: {files}
"""


def write_bundle(restorer: str, out: str | os.PathLike, calib: str = "synth:poled", calib_count: int = 16,
                 verify_data: str | None = None, verify_count: int = 4, attacks: tuple[str, ...] = ("pgd", "simba"),
                 progress: Advance = noop, overwrite: bool = False) -> Path:
    """Write a bundle folder (or ``.tar.gz`` when ``out`` ends with it) for ``restorer``."""
    import platform

    from udc_edge.calibration.dataset import load_calibration_set
    from udc_edge.calibration.qdq import quantize_bytes
    from udc_edge.calibration.ranges import cached_ranges
    from udc_edge.core.version import __version__
    from udc_edge.data.images import write_png
    from udc_edge.data.readers import open_paired_dataset
    from udc_edge.data.synth import SynthSpec, write_synthetic_dataset
    from udc_edge.deploy.reference import VerifySpec, make_reference_set
    from udc_edge.export.onnx_export import ExportSpec, export_onnx
    from udc_edge.models.zoo import load_model

    out = Path(out)
    tar = out.name.endswith(".tar.gz")
    check_output(out, (restorer, calib, verify_data), overwrite, kind="file" if tar else "dir")
    model, desc = load_model(restorer)
    with work_dir("bundle") as work, \
            atomic_dir(out if not tar else work / "bundle", overwrite=overwrite) as tmp:
        export_onnx(model, tmp / "model.onnx", ExportSpec(height=256, width=256, parity_images=1))
        progress(1, status="exported")
        cs = load_calibration_set(calib, calib_count)
        (tmp / "calib").mkdir()
        for i, img in enumerate(cs.images[:4]):
            write_png(tmp / "calib" / f"{i:04d}.png", img.transpose(1, 2, 0), 16)
        for target in QDQ_TARGETS:
            ranges, _ = cached_ranges(tmp / "model.onnx", cs, "percentile", symmetric=target == Backend.TRT.qdq_target,
                                      cache=tmp / f"calib-cache-{target}.json")
            (tmp / f"qdq-{target}.onnx").write_bytes(quantize_bytes(tmp / "model.onnx", ranges, target))
            progress(1, status=f"quantised for {target}")
        if verify_data is None:
            write_synthetic_dataset(work / "vdata", SynthSpec(count=verify_count, size=128,
                                                                    source="photos:test", seed=99))
            verify_data = str(work / "vdata")
        spec = VerifySpec(attacks=attacks, limit=verify_count)
        make_reference_set(model, open_paired_dataset(verify_data), spec).save(tmp / "reference")
        progress(1, status="reference outputs stored")
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": BUNDLE_FORMAT,
            "restorer": desc.get("name") or desc.get("path"),
            "arch": desc.get("arch"),
            "udc_edge": __version__,
            "created": time.strftime("%Y-%m-%d %H:%M"),
            "calibration": {**cs.describe(), "method": "percentile"},
            "verify": spec.__dict__ | {"attacks": list(attacks)},
            "files": {f: sha256_file(tmp / f) for f in files},
        }
        write_json_atomic(tmp / "bundle.json", manifest)
        write_text_atomic(tmp / "README.md", README.format(
            name=manifest["restorer"], host=platform.node() or "host", version=__version__, date=manifest["created"],
            bundle=out.name, files=", ".join(files)))
        if tar:
            with atomic_path(out) as t, tarfile.open(t, "w:gz") as tf:
                tf.add(tmp, arcname=out.name[: -len(".tar.gz")])
    return out


@dataclass
class Bundle:
    """An opened, checked bundle. Use it in a ``with`` block: a ``.tar.gz`` is unpacked to a
    temporary folder that closing the bundle deletes (a folder bundle is left as it is)."""

    root: Path
    manifest: dict
    unpacked: Path | None = None  # the temporary folder of an unpacked .tar.gz

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.unpacked is not None:
            shutil.rmtree(self.unpacked, ignore_errors=True)
            self.unpacked = None

    def path(self, name: str) -> Path:
        return self.root / name

    def onnx_for(self, backend: str, precision: str) -> Path:
        """The ONNX a build starts from: the Q/DQ model for ORT/TensorRT INT8; the float model
        otherwise (OpenVINO and ``auto`` quantise it themselves with the bundle's calibration images)."""
        if precision == "int8" and backend in ("ort", "trt"):
            return self.path(f"qdq-{Backend.parse(backend).qdq_target}.onnx")
        return self.path("model.onnx")

    def reference_set(self):
        from udc_edge.deploy.reference import ReferenceSet

        return ReferenceSet.load(self.root / "reference")


def open_bundle(path: str | os.PathLike) -> Bundle:
    """Open a bundle folder or ``.tar.gz`` and check every file's sha256 against its manifest.

    Close the result (or use it as a context manager) to delete an unpacked ``.tar.gz``; a
    refused bundle leaves nothing behind.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"bundle {path} does not exist", "make one with udc-edge bundle")
    if not path.is_file():
        return _checked(path, None)
    if not path.name.endswith(".tar.gz"):
        raise InputError(f"bundle {path} is neither a folder nor a .tar.gz")
    dest = new_work_dir("bundle")
    try:
        try:
            with tarfile.open(path) as tf:
                tf.extractall(dest, filter="data")  # refuses absolute paths, links out, devices
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # EOFError: a truncated gzip stream
            raise DataError(f"bundle {path} is not a readable .tar.gz ({type(exc).__name__}: {exc})",
                            "copy the bundle again, or rebuild it with udc-edge bundle") from exc
        roots = [p for p in dest.iterdir() if p.is_dir()]
        return _checked(roots[0] if len(roots) == 1 else dest, dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _checked(path: Path, unpacked: Path | None) -> Bundle:
    """The bundle at ``path`` once its manifest and every file's sha256 check out."""
    try:
        manifest = json.loads((path / "bundle.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"bundle {path} has no readable bundle.json", "rebuild it with udc-edge bundle") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(
            f"bundle {path} has format {got!r}, expected {BUNDLE_FORMAT!r}", "rebuild it with udc-edge bundle"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise DataError(f"bundle {path}: 'files' in bundle.json must map names to sha256 strings, "
                        f"got a {type(files).__name__}", "rebuild it with udc-edge bundle")
    root = path.resolve()
    for name, digest in files.items():
        f = path / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not f.resolve().is_relative_to(root):
            raise DataError(f"bundle {path} lists {name!r}, a path outside the bundle",
                            "a bundle only names its own files; rebuild it with udc-edge bundle")
        if not f.is_file():
            raise DataError(f"bundle {path} is missing {name}", "copy the whole bundle, or rebuild it")
        if sha256_file(f) != digest:
            raise DataError(f"bundle file {name} does not match its sha256 in bundle.json (altered or truncated)",
                            "copy the bundle again, or rebuild it")
    return Bundle(path, manifest, unpacked)
