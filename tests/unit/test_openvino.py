"""OpenVINO backend: FP32/BF16/NNCF INT8 IR engines, manifests of .xml + .bin, bad input, auto selection.

Real OpenVINO compiles and real NNCF quantisation on the tiny trained restorer; skipped
where openvino is not installed (the ORT-only behaviour is tested in test_openvino_absent).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from udc_edge.core.errors import DataError, EngineError, UsageError
from udc_edge.core.metrics import psnr
from udc_edge.engines import load_engine
from udc_edge.engines import openvino as ovb
from udc_edge.engines.auto import choose
from udc_edge.engines.build import build_engine
from udc_edge.engines.manifest import fields_sha256, manifest_path
from udc_edge.engines.spec import BuildSpec

INT8 = {
    "backend": "openvino",
    "precision": "int8",
    "calib": "synth:toled",
    "calib_count": 8,
    "calib_size": 64,
    "threads": 1,
}


@pytest.fixture(scope="module")
def ov_engines(tiny_onnx, tmp_path_factory):
    d = tmp_path_factory.mktemp("ov")
    fp32 = build_engine(tiny_onnx, d / "fp32.xml", BuildSpec(backend="openvino", threads=1))
    int8 = build_engine(tiny_onnx, d / "int8.xml", BuildSpec(**INT8))
    return d, fp32, int8


@pytest.mark.parametrize("hw", [(64, 64), (72, 104)])
def test_fp32_engine_matches_torch_at_two_sizes(ov_engines, tiny_restorer, hw):
    d, rep, _ = ov_engines
    x = np.random.default_rng(hw[0]).random((1, 3, *hw), dtype=np.float32)
    with torch.no_grad():
        ref = tiny_restorer(torch.from_numpy(x)).numpy()
    with load_engine(d / "fp32.xml", threads=1) as eng:
        y = eng(x)
        info = eng.info()
    assert rep.precision == "fp32" and rep.inference_precision == "f32"
    assert info.backend == "openvino" and info.extra["inference_precision"] == "f32" and info.extra["threads"] == 1
    assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-4


def test_int8_engine_stays_close_to_fp32_and_ground_truth(ov_engines, heldout):
    d, _, rep = ov_engines
    assert rep.precision == "int8" and rep.fidelity_db is not None
    fid, loss = [], []
    with load_engine(d / "fp32.xml", threads=1) as e32, load_engine(d / "int8.xml", threads=1) as e8:
        for x, gt in heldout:
            y32, y8 = e32(x)[0].transpose(1, 2, 0), e8(x)[0].transpose(1, 2, 0)
            fid.append(psnr(y8, y32))
            loss.append(psnr(y32, gt) - psnr(y8, gt))
    assert np.mean(fid) >= 35.0, f"NNCF INT8 only {np.mean(fid):.1f} dB from FP32"
    assert np.mean(loss) <= 0.3, f"NNCF INT8 loses {np.mean(loss):.2f} dB against ground truth"


def test_manifest_records_versions_cpu_hashes_and_calibration(ov_engines, tiny_onnx):
    d, _, _ = ov_engines
    m = json.loads(manifest_path(d / "int8.xml").read_text())
    assert m["backend"] == "openvino" and m["backend_version"] == ovb.get_version()
    assert m["build_options"]["nncf"]["version"] and m["build_options"]["calib_size"] == [64, 64]
    assert m["device"]["cpu_model"] and m["device"]["inference_precision"] in ("f32", "bf16")
    assert isinstance(m["device"]["isa_flags"], list)
    assert set(m["files_sha256"]) == {"int8.bin"} and len(m["engine_sha256"]) == 64
    assert m["calibration"]["count"] == 8 and m["calibration"]["size"] == [64, 64]


def _copy_engine(src_dir, name, dst):
    for suffix in (".xml", ".bin", ".xml.json"):
        (dst / f"{name}{suffix}").write_bytes((src_dir / f"{name}{suffix}").read_bytes())
    return dst / f"{name}.xml"


def test_altered_or_missing_bin_or_xml_and_other_version_are_refused(ov_engines, tmp_path):
    d, _, _ = ov_engines
    xml = _copy_engine(d, "fp32", tmp_path)
    load_engine(xml)  # intact: loads
    binf = xml.with_suffix(".bin")
    data = bytearray(binf.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binf.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="fp32.bin does not match"):
        load_engine(xml)
    binf.unlink()
    with pytest.raises(EngineError, match="missing its file"):
        load_engine(xml)
    xml = _copy_engine(d, "fp32", tmp_path)
    xml.write_text(xml.read_text().replace("<net ", "<net  "))
    with pytest.raises(EngineError, match="does not match its manifest"):
        load_engine(xml)
    xml = _copy_engine(d, "fp32", tmp_path)
    mp = manifest_path(xml)
    m = json.loads(mp.read_text())
    m["backend_version"] = "2023.0.0"  # as if built by that release: a consistent manifest, not a hand edit
    m["manifest_sha256"] = fields_sha256({k: v for k, v in m.items() if k != "manifest_sha256"})
    mp.write_text(json.dumps(m))
    with pytest.raises(EngineError, match="built with OpenVINO 2023.0.0"):
        load_engine(xml)


def test_wrong_input_dtype_and_shape_are_refused(ov_engines, tiny_restorer, tmp_path):
    d, _, _ = ov_engines
    with load_engine(d / "fp32.xml") as eng:
        with pytest.raises(EngineError, match="float32"):
            eng(np.zeros((1, 3, 32, 32), np.float64))
        with pytest.raises(EngineError, match="3 channels"):
            eng(np.zeros((1, 4, 32, 32), np.float32))
    from udc_edge.export.onnx_export import ExportSpec, export_onnx

    export_onnx(tiny_restorer, tmp_path / "fixed.onnx", ExportSpec(height=48, width=48, dynamic=False, parity_images=1))
    build_engine(tmp_path / "fixed.onnx", tmp_path / "fixed.xml", BuildSpec(backend="openvino"))
    with load_engine(tmp_path / "fixed.xml") as eng:
        assert eng(np.zeros((1, 3, 48, 48), np.float32)).shape == (1, 3, 48, 48)
        with pytest.raises(EngineError, match="does not fit"):
            eng(np.zeros((1, 3, 64, 64), np.float32))
    # calibration images of another size than the fixed-shape model
    with pytest.raises(UsageError, match="differs from the model's fixed input 48x48"):
        build_engine(tmp_path / "fixed.onnx", tmp_path / "q.xml", BuildSpec(**{**INT8, "calib_size": 32}))
    from udc_edge.data.images import write_png

    (tmp_path / "small").mkdir()
    for i in range(2):
        write_png(tmp_path / "small" / f"{i}.png", np.full((32, 40, 3), 0.3, np.float32), 8)
    with pytest.raises(DataError, match="32x40, smaller than the fixed-shape model's 48x48"):
        build_engine(tmp_path / "fixed.onnx", tmp_path / "q.xml",
                     BuildSpec(**{**INT8, "calib": str(tmp_path / "small"), "calib_size": None}))
    assert not list(tmp_path.glob("q.*")) and not list(tmp_path.glob(".q*"))


def test_bf16_on_a_cpu_without_it_is_refused_not_run_as_fp32(tiny_onnx, tmp_path, monkeypatch):
    """The CPU-capability probe is simulated (flags without avx512_bf16/amx): CPUs without
    BF16 are not available to this test machine."""
    monkeypatch.setattr(ovb, "cpu_facts", lambda: {"cpu_model": "Test CPU", "isa_flags": ["avx2", "avx512f"]})
    with pytest.raises(EngineError, match=r"this CPU \(Test CPU\) has no avx512_bf16 or AMX"):
        build_engine(tiny_onnx, tmp_path / "b.xml", BuildSpec(backend="openvino", precision="bf16"))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not ovb.is_available() or not ovb.supports_bf16(), reason="this CPU has no BF16")
def test_bf16_engine_really_runs_bf16_and_stays_close(tiny_onnx, ov_engines, tmp_path, heldout):
    d, _, _ = ov_engines
    rep = build_engine(tiny_onnx, tmp_path / "b.xml", BuildSpec(backend="openvino", precision="bf16", threads=1))
    assert rep.precision == "bf16" and rep.inference_precision == "bf16"
    with load_engine(tmp_path / "b.xml", threads=1) as eb, load_engine(d / "fp32.xml", threads=1) as e32:
        assert eb.info().extra["inference_precision"] == "bf16"
        fid = [psnr(eb(x)[0], e32(x)[0]) for x, _ in heldout]
    assert 35 < np.mean(fid) < 100  # close, and not identical: it did not silently run FP32


def test_bad_build_requests(tiny_onnx, tmp_path):
    with pytest.raises(UsageError, match="needs calibration data"):
        BuildSpec(backend="openvino", precision="int8")
    with pytest.raises(UsageError, match="bf16 is offered on the OpenVINO backend only"):
        BuildSpec(backend="ort", precision="bf16")
    with pytest.raises(UsageError, match="must end in .xml"):
        build_engine(tiny_onnx, tmp_path / "x.onnx", BuildSpec(backend="openvino"))
    with pytest.raises(UsageError, match="--calib-size must be >= 8"):
        BuildSpec(backend="openvino", precision="int8", calib="synth:toled", calib_size=2)
    assert not list(tmp_path.iterdir())


def test_choose_skips_the_fastest_when_it_misses_the_fidelity_bound():
    cands = [{"name": "ort-fp32", "ms": 10.0, "fidelity_db": 100.0},
             {"name": "openvino-bf16", "ms": 5.0, "fidelity_db": 55.0},
             {"name": "openvino-int8", "ms": 2.0, "fidelity_db": 38.0}]
    win, why = choose(cands, 40.0)
    assert cands[win]["name"] == "openvino-bf16" and "faster but unfaithful: openvino-int8" in why
    assert cands[2]["verdict"].startswith("rejected: 38.0 dB") and cands[0]["verdict"].startswith("slower (2.00x")
    assert cands[choose(cands, 30.0)[0]]["name"] == "openvino-int8"
    with pytest.raises(EngineError, match="no candidate"):
        choose(cands, 200.0)


def test_backend_auto_builds_measures_and_keeps_the_fastest_faithful(tiny_onnx, tmp_path):
    """Real candidates, built and measured twice: the second time the bound is set just above
    the fidelity of the first run's fastest candidate, which must then be rejected, and the
    winner must be the fastest of the candidates that meet the bound."""
    spec = BuildSpec(backend="auto", precision="auto", calib="synth:toled", calib_count=8, calib_size=64,
                     threads=1, min_fidelity=1.0)
    first = [c for c in build_engine(tiny_onnx, tmp_path / "a.onnx", spec).candidates if "ms" in c]
    assert {"ort-fp32", "ort-int8", "openvino-fp32", "openvino-int8"} <= {c["name"] for c in first}
    fastest = min(first, key=lambda c: c["ms"])
    if fastest["fidelity_db"] >= 99.0:  # an FP32 engine was fastest: make the fastest quantised one miss
        fastest = min((c for c in first if c["fidelity_db"] < 99.0), key=lambda c: c["ms"])
    bound = fastest["fidelity_db"] + 0.5
    rep = build_engine(tiny_onnx, tmp_path / "best.onnx", replace(spec, min_fidelity=bound))
    cands = [c for c in rep.candidates if "ms" in c]
    missed = next(c for c in cands if c["name"] == fastest["name"])
    assert missed["fidelity_db"] < bound and missed["verdict"].startswith("rejected")
    ok = [c for c in cands if c["fidelity_db"] >= bound]
    win = next(c for c in cands if c["verdict"] == "chosen")
    assert win is min(ok, key=lambda c: c["ms"]) and win["fidelity_db"] >= bound
    final = tmp_path / ("best" + win["suffix"])
    m = json.loads(manifest_path(final).read_text())
    assert m["requested_precision"] == "auto" and m["summary"]["auto"]["choice"] == rep.choice
    assert [c["name"] for c in m["summary"]["auto"]["candidates"]] == [c["name"] for c in cands]
    load_engine(final)  # the renamed winner still matches its manifest
    leftovers = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("a."))
    assert all(n.startswith("best.") for n in leftovers), leftovers
