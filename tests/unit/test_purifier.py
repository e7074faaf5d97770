"""The diffusion purifier: exact DDIM maths, determinism, ONNX parity, validation, pairing,
distillation and adaptive attacks, on tiny UNets and 32 px images."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from udc_edge.core.errors import ModelError, UsageError
from udc_edge.defence.defence import (
    BATCH_SEED_STRIDE,
    DefenceSpec,
    DefendedPipeline,
    craft_adaptive,
    craft_on_restorer,
    measure,
)
from udc_edge.diffusion.purifier import (
    Purifier,
    check_pair,
    load_purifier,
    save_purifier,
    state_digest,
)
from udc_edge.diffusion.schedule import alphas_cumprod, ddim_reverse, ddim_timesteps, diffuse
from udc_edge.models import create
from udc_edge.training.distill import DistillSpec, distill
from udc_edge.training.purifier import PurifierTrainSpec, denoising_loss


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields in [0, 1]: easy images a tiny DDPM learns in seconds."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Purifier, str]:
    """A tiny teacher (4 DDIM steps) trained 60 steps to denoise smooth images."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    p = Purifier(unet="purifier-t", t_star=0.1, steps=4, resolution=32)
    opt = torch.optim.Adam(p.unet.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(60):
        x = smooth_images(8, seed=step)
        loss = denoising_loss(p, x, torch.randint(0, 200, (8,), generator=g), torch.randn(x.shape, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    save_purifier(path, p.eval())
    return p, str(path)


def test_ddim_reverse_is_diffusers_ddim_step(teacher):
    from diffusers import DDIMScheduler

    p, _ = teacher
    x, n = smooth_images(2), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    z = diffuse(x, 0.1, n)
    assert ddim_timesteps(0.1, 4) == [99, 74, 49, 24]
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=True, set_alpha_to_one=True)
    sched.set_timesteps(40)  # stride 25: 99 -> 74 -> 49 -> 24 -> x0, like ours
    ref = z
    with torch.no_grad():
        for t in (99, 74, 49, 24):
            ref = sched.step(p.unet(ref, t).sample, t, ref, eta=0.0).prev_sample
        ours = ddim_reverse(p.unet, z, 0.1, 4)
    assert torch.allclose(ours, ref, atol=1e-5)
    a = float(alphas_cumprod()[99])
    assert torch.allclose(z, a**0.5 * (2 * x - 1) + (1 - a) ** 0.5 * n)


def test_purification_is_deterministic_for_fixed_noise_and_any_size(teacher):
    p, _ = teacher
    x = torch.rand(2, 3, 30, 37, generator=torch.Generator().manual_seed(0))
    n1 = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    n2 = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b, c = p(x, n1), p(x, n1.clone()), p(x, n2)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1


def test_sampler_exports_to_one_onnx_graph_matching_torch(teacher, tmp_path):
    import onnxruntime as ort

    p, _ = teacher
    sampler = p.sampler(steps=2)
    from udc_edge.diffusion.pipeline import PurifierGraph
    from udc_edge.export.onnx_export import ExportSpec, export_onnx

    # the shipped path (export --purifier): checker, parity, metadata
    export_onnx(PurifierGraph(sampler), tmp_path / "p.onnx",
                ExportSpec(height=32, width=32, input_names=("input", "noise"), parity_images=1))
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "noise"]
    for shape in [(1, 3, 32, 32), (2, 3, 48, 64)]:
        g = torch.Generator().manual_seed(sum(shape))
        x, n = torch.rand(shape, generator=g), torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = sampler(x, n).numpy()
        out = sess.run(None, {"input": x.numpy(), "noise": n.numpy()})[0]
        assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-3


def test_t_star_and_steps_are_validated(teacher):
    p, _ = teacher
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(UsageError, match=r"outside \(0, 1\)"):
            p.sampler(t_star=bad)
    with pytest.raises(UsageError, match="must be an integer >= 1"):
        p.sampler(steps=0)
    with pytest.raises(UsageError, match="do not fit below"):
        p.sampler(t_star=0.01, steps=20)
    with pytest.raises(UsageError, match="trained on"):
        p.sampler(t_star=0.5)  # t_max 0.3
    with pytest.raises(UsageError, match="t-star"):
        PurifierTrainSpec(t_star=1.0)
    with pytest.raises(UsageError, match="above --t-max"):
        PurifierTrainSpec(t_star=0.3, t_max=0.2)
    with pytest.raises(UsageError, match="1 to 4"):
        DistillSpec(teacher="x", k=8)
    with pytest.raises(ModelError, match="outside"):
        Purifier(unet="purifier-t", t_star=1.2)
    with pytest.raises(UsageError, match="noise tensor"):
        p(torch.rand(1, 3, 32, 32))


def test_student_with_another_t_star_or_teacher_is_refused(teacher, tmp_path):
    p, path = teacher
    cfg = {**p.config(), "role": "student", "steps": 1}
    with pytest.raises(ModelError, match="teacher's is 0.15"):
        Purifier(**{**cfg, "distillation": {"teacher_t_star": 0.15}})
    other = Purifier(**{**cfg, "t_star": 0.15, "distillation": {"teacher_t_star": 0.15}})
    with pytest.raises(ModelError, match="distilled at t\\* = 0.15"):
        check_pair(p, other)
    stranger = Purifier(**{**cfg, "distillation": {"teacher_t_star": 0.1, "teacher_digest": "0" * 64}})
    with pytest.raises(ModelError, match="other teacher weights"):
        check_pair(p, stranger)
    good = Purifier(**{**cfg, "distillation": {"teacher_t_star": 0.1, "teacher_digest": state_digest(p)}})
    check_pair(p, good)
    with pytest.raises(UsageError, match="distilled for"):
        good.sampler(t_star=0.12)
    # A restorer checkpoint is not a purifier; a config that does not fit its weights is refused.
    from udc_edge.models import save_checkpoint

    save_checkpoint(tmp_path / "r", create("unet-t"), {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}})
    with pytest.raises(ModelError, match="not a diffusion purifier"):
        load_purifier(tmp_path / "r")
    wrong = Purifier(unet={"block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 4})
    save_purifier(tmp_path / "w", wrong)
    shutil.copy(f"{path}/model.safetensors", tmp_path / "w" / "model.safetensors")  # the teacher's weights
    with pytest.raises(ModelError, match="do not belong together"):
        load_purifier(tmp_path / "w")


def test_a_few_distillation_steps_lower_the_student_teacher_gap(teacher, tmp_path):
    _, path = teacher
    report = distill(DistillSpec(teacher=path, out=str(tmp_path / "k1"), k=1, train_steps=24, batch=4, lr=2e-3,
                                 data="synth:toled", patch=32, pool=4, val_count=2, val_every=12, warmup=2,
                                 targets=16, threads=1))
    assert report.gap_after < 0.9 * report.gap_before
    student, _ = load_purifier(tmp_path / "k1")
    teacher_p, _ = load_purifier(path)
    check_pair(teacher_p, student)
    assert student.role == "student" and student.steps == 1 and student.t_star == teacher_p.t_star


def test_eot_adaptive_attack_is_at_least_as_strong_as_non_adaptive(teacher):
    p, _ = teacher
    torch.manual_seed(0)
    restorer = create("unet-t").eval()
    with torch.no_grad():  # an identity restorer: the purifier alone decides what survives
        restorer.tail.weight.zero_()
        restorer.tail.bias.zero_()
    x = y = smooth_images(3, seed=99)
    spec = DefenceSpec(attack_steps=8, eot=4, draws=2)
    pipe = DefendedPipeline(restorer, p.sampler(steps=1))
    clean = measure(pipe, x, y, spec.draws)
    nonadaptive = measure(pipe, craft_on_restorer(restorer, x, y, spec), y, spec.draws)
    exact = measure(pipe, craft_adaptive(pipe, x, y, spec), y, spec.draws)
    bpda = measure(pipe, craft_adaptive(DefendedPipeline(restorer, p.sampler(), bpda=True), x, y, spec), y,
                   spec.draws)
    assert exact["psnr"] <= nonadaptive["psnr"] <= clean["psnr"]
    assert bpda["psnr"] <= nonadaptive["psnr"]


def test_adaptive_attack_in_image_batches_is_each_batch_attacked_alone(teacher):
    """--attack-batch bounds EOT memory without changing what each image faces: batch b is
    the same attack as an unbatched run on its images with seed + b * BATCH_SEED_STRIDE."""
    p, _ = teacher
    torch.manual_seed(0)
    restorer = create("unet-t").eval()
    x = y = smooth_images(3, seed=5)
    spec = DefenceSpec(attack_steps=3, eot=2, draws=1)
    pipe = DefendedPipeline(restorer, p.sampler(steps=1))
    whole = craft_adaptive(pipe, x, y, spec)
    assert torch.equal(craft_adaptive(pipe, x, y, replace(spec, attack_batch=3)), whole)
    batched = craft_adaptive(pipe, x, y, replace(spec, attack_batch=2))
    assert batched.shape == x.shape and (batched - x).abs().max() <= spec.eps + 1e-6
    assert torch.equal(batched[:2], craft_adaptive(pipe, x[:2], y[:2], spec))
    alone = craft_adaptive(pipe, x[2:], y[2:], replace(spec, seed=spec.seed + BATCH_SEED_STRIDE))
    assert torch.equal(batched[2:], alone)
    assert not torch.equal(batched[2:], whole[2:])  # its own seed, not the unbatched stream
    with pytest.raises(UsageError, match="--attack-batch"):
        DefenceSpec(attack_batch=-1)
