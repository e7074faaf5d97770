"""Tiny restorers that reproduce the obstacles real UDC architectures meet on the way to ONNX.

Each class is a few hundred parameters, runs on 16-48 px images in milliseconds, and is
loaded by spec string (``byo_obstacles:FFTNet``) with the ``tests`` folder on ``sys.path``,
exactly as a user's ``mypkg.nets:MyNet`` would be. ``docs/byo.md`` walks through each one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Head(nn.Module):
    """conv 3->hidden, ReLU; shared stem of the obstacle models."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class FFTNet(nn.Module):
    """A frequency-domain filter (``torch.fft.rfft2`` / ``irfft2``) between two convs, as in
    FFT-based UDC restorers: TorchScript cannot export it, dynamo emits DFT (opset >= 20)."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.head = _Head(hidden)
        self.gain = nn.Parameter(torch.ones(1, hidden, 1, 1) * 0.9)
        self.tail = nn.Conv2d(hidden, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        spec = torch.fft.rfft2(f, norm="ortho")
        f = torch.fft.irfft2(spec * self.gain, s=f.shape[-2:], norm="ortho")
        return x + 0.1 * self.tail(f)


class UnfoldKPN(nn.Module):
    """Kernel prediction: a conv predicts a k x k kernel per pixel, applied to the input's
    neighbourhood gathered with ``Tensor.unfold`` (exported as Gather/Range indexing)."""

    def __init__(self, hidden: int = 4, k: int = 3):
        super().__init__()
        self.k = k
        self.head = _Head(hidden)
        self.kernels = nn.Conv2d(hidden, k * k, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k, p = self.k, self.k // 2
        weights = torch.softmax(self.kernels(self.head(x)), dim=1)  # n, k*k, h, w
        patches = F.pad(x, (p, p, p, p), mode="replicate").unfold(2, k, 1).unfold(3, k, 1)  # n, c, h, w, k, k
        patches = patches.reshape(n, c, h, w, k * k).permute(0, 1, 4, 2, 3)  # n, c, k*k, h, w
        return (patches * weights.unsqueeze(1)).sum(dim=2)


class TupleNet(nn.Module):
    """Returns ``(restored, half-resolution auxiliary output)``, like multi-scale restorers
    trained with deep supervision: needs ``--output-index 0``."""

    multiple = 2

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.head = _Head(hidden)
        self.tail = nn.Conv2d(hidden, 3, 3, padding=1)
        self.aux = nn.Conv2d(hidden, 3, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.head(x)
        return x + self.tail(f), self.aux(f)


class PsfCodeNet(nn.Module):
    """Conditioned on a PSF code (a vector describing the display's point-spread function),
    as in PSF-aware UDC restorers: ``forward(x, psf_code)`` needs ``--extra-input``."""

    def __init__(self, hidden: int = 4, code: int = 8):
        super().__init__()
        self.head = _Head(hidden)
        self.film = nn.Linear(code, 2 * hidden)
        self.tail = nn.Conv2d(hidden, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, psf_code: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(psf_code).chunk(2, dim=1)
        f = self.head(x) * (1 + scale[..., None, None]) + shift[..., None, None]
        return x + self.tail(f)


class CudaNet(nn.Module):
    """Hard-codes ``.cuda()`` in ``__init__`` and in ``forward``, as research code written for
    one GPU does: fails on a CPU-only machine unless loaded under udc-edge's CPU patch."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.head = _Head(hidden)
        self.tail = nn.Conv2d(hidden, 3, 3, padding=1)
        self.register_buffer("scale", torch.full((1, 3, 1, 1), 0.5).cuda())
        self.cuda()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.cuda()
        return x + self.scale * self.tail(self.head(x))


class FixedGridNet(nn.Module):
    """Builds a coordinate grid from Python ints of the input size (``int(h)``), as code with
    Python-side padding or ``x.data.new().resize_(...)`` does: exports only at a fixed shape."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.head = _Head(hidden)
        self.tail = nn.Conv2d(hidden + 1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        grid = torch.linspace(0.0, 1.0, h * w).reshape(1, 1, h, w).expand(x.shape[0], 1, h, w)
        return x + self.tail(torch.cat([self.head(x), grid], dim=1))


class ConcatUNet(nn.Module):
    """Four stride-2 downsamplings, each undone by a x2 upsampling concatenated with its skip,
    as in UNet restorers: ``torch.cat`` fails ("Sizes of tensors must match") unless H and W
    are multiples of 16, and the class declares no ``multiple`` (doctor finds it)."""

    def __init__(self, hidden: int = 4, levels: int = 4):
        super().__init__()
        self.head = _Head(hidden)
        self.down = nn.ModuleList(nn.Conv2d(hidden, hidden, 3, stride=2, padding=1) for _ in range(levels))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * hidden, hidden, 3, padding=1) for _ in range(levels))
        self.tail = nn.Conv2d(hidden, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        skips = []
        for down in self.down:
            skips.append(f)
            f = torch.relu(down(f))
        for fuse, skip in zip(self.fuse, reversed(skips), strict=False):
            f = torch.relu(fuse(torch.cat([F.interpolate(f, scale_factor=2.0, mode="nearest"), skip], dim=1)))
        return x + self.tail(f)


class UnbatchedCodeNet(PsfCodeNet):
    """A PSF-code restorer whose code must have batch 1 (``psf_code[0]``, as code written for
    one display does): the code cannot follow the image's batch, so one engine cannot serve
    two displays; doctor says BLOCKED and points to ``--freeze-input``."""

    def forward(self, x: torch.Tensor, psf_code: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(psf_code[0]).view(1, -1).expand(x.shape[0], -1).chunk(2, dim=1)
        f = self.head(x) * (1 + scale[..., None, None]) + shift[..., None, None]
        return x + self.tail(f)


class HugeMultipleNet(ConcatUNet):
    """Nine stride-2 levels: needs H and W multiples of 512, beyond doctor's limit of 256."""

    def __init__(self, hidden: int = 2):
        super().__init__(hidden, levels=9)


class PosEmbedNet(nn.Module):
    """A learned positional embedding of at most 96 x 96, sliced to the input size, as in
    transformer restorers trained on fixed crops: exports, matches torch and builds at small
    sizes, then fails on a 100-pixel image; doctor's trial of ``restore`` finds that."""

    def __init__(self, hidden: int = 4, max_size: int = 96):
        super().__init__()
        self.head = _Head(hidden)
        self.tail = nn.Conv2d(hidden, 3, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, hidden, max_size, max_size) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return x + self.tail(f + self.pos[..., : x.shape[-2], : x.shape[-1]])
