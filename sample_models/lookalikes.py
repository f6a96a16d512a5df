"""Look-alikes of well-known models, exported to ONNX the way their owners' tools export them.

Real models arrive as files written by other people's exporters, with the quirks those exporters
leave in the graph. These builders rebuild the *architecture* of a few well-known models with
random weights (fixed seed; they test graph handling, not accuracy) and export them the same way:

- ``resnet18`` / ``resnet-small``: torchvision's ResNet-18 layout (basic blocks 64-128-256-512,
  3x224x224, 1000 classes) and a scaled-down copy (16-32-64-128, 3x64x64, 10 classes);
- ``mobilenetv2`` / ``mobilenetv2-small``: MobileNetV2 (depthwise convs, inverted residuals, ReLU6);
- ``bert``: a BERT-style encoder with HF-style inputs (``input_ids``, ``attention_mask``,
  ``token_type_ids``) and an extended attention mask built with ``Expand``/``GreaterOrEqual``/``Where``;
- ``silero-vad``: a Silero-style voice-activity detector: ``input`` [batch, 512] audio,
  ``state`` [2, batch, 128], a scalar ``sr``; an ``If`` node on ``sr == 16000`` picks the front-end;
  an LSTM step; outputs ``output`` [batch, 1] (speech probability) and ``stateN``;
- ``sequence-lstm``: an LSTM detector over time: ``x`` [time, 1, 40], ``h0``/``c0`` [1, 1, 128];
  dim 0 is time, not batch;
- ``paddle-convnet``: an opset-12 conv net whose weights sit in ``Constant`` nodes (as Paddle2ONNX
  writes them) with a BatchNorm on a rank-2 tensor (PP-OCR heads have one).

All but the last are exported with ``torch.onnx.export(..., dynamo=False, do_constant_folding=True)``
as torchvision / HF transformers / Silero exports are: BatchNorm is folded into the convs and equal
tensors (e.g. the zero biases left by folding) are stored once and aliased through ``Identity``
nodes. Small sizes build and export in about a second; ``resnet18`` and ``mobilenetv2`` are full size.

    from sample_models.lookalikes import build_lookalike
    la = build_lookalike("resnet-small", tmp_path)   # -> LookAlike(path=..., feeds={...}, ...)
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SEED = 0


@dataclass
class LookAlike:
    """An exported look-alike: its ONNX file, verification feeds and what it imitates."""

    name: str
    path: Path
    feeds: dict[str, np.ndarray]
    imitates: str
    opset: int
    module: nn.Module | None = None  # the PyTorch module it was exported from (None where irrelevant)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Weight initialisation


def _randomize_bn(bn: nn.BatchNorm2d, gen: torch.Generator, zero_shift: bool) -> None:
    """Random BatchNorm statistics; ``zero_shift`` keeps beta = mean = 0, so the folded bias is 0
    (the equal zero biases that the exporter deduplicates behind ``Identity`` nodes)."""
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(0.5 + torch.rand(c, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        if not zero_shift:
            bn.bias.copy_(0.1 * torch.randn(c, generator=gen))
            bn.running_mean.copy_(0.1 * torch.randn(c, generator=gen))


def _init(module: nn.Module, seed: int = SEED, zero_shift: Callable[[str], bool] = lambda name: False) -> nn.Module:
    """Seeded weights for every layer (He-style for convs/linears so activations keep their scale)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                _randomize_bn(m, gen, zero_shift(name))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, (nn.LSTM, nn.Embedding)):
                for p in m.parameters():
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return module.eval()


# ---------------------------------------------------------------------------------------------
# ResNet


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with basic blocks (``resnet18`` = widths 64..512, blocks 2-2-2-2)."""

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(c_in, w, 2 if (j == 0 and i > 0) else 1))
                c_in = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c_in, num_classes)
        self.n_stages = len(widths)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------------------------
# MobileNetV2


class ConvBNReLU6(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(c_in, hidden, 1))
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


MOBILENETV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 layout (expand ratio t, channels c, repeats n, stride s)."""

    def __init__(self, width_mult: float = 1.0, settings=MOBILENETV2_SETTINGS, last: int = 1280, num_classes: int = 1000):
        super().__init__()
        c_in = _make_divisible(32 * width_mult)
        last = _make_divisible(last * max(1.0, width_mult))
        feats: list[nn.Module] = [ConvBNReLU6(3, c_in, 3, 2)]
        for t, c, n, s in settings:
            c_out = _make_divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        feats.append(ConvBNReLU6(c_in, last, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------
# BERT


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def _split(self, x):
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / (self.head_dim ** 0.5) + mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.shape[0], ctx.shape[1], -1)


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, inter: int):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, inter)
        self.output = nn.Linear(inter, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, mask):
        x = self.attn_norm(x + self.attn_out(self.attention(x, mask)))
        return self.out_norm(x + self.output(F.gelu(self.intermediate(x))))


class BertEncoder(nn.Module):
    """Embeddings (word + position + token type, LayerNorm) and post-norm encoder layers."""

    def __init__(self, vocab: int = 1000, hidden: int = 64, layers: int = 2, heads: int = 4, inter: int = 128, max_pos: int = 64):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layer = nn.ModuleList(BertLayer(hidden, heads, inter) for _ in range(layers))
        self.register_buffer("position_ids", torch.arange(max_pos).unsqueeze(0), persistent=False)

    def forward(self, input_ids, attention_mask, token_type_ids):
        b, s = input_ids.shape
        pos = self.position_ids[:, :s]
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        x = self.emb_norm(x)
        # HF-style extended mask: [b, s] -> [b, 1, s, s]; kept positions 0, masked ones dtype-min
        keep = attention_mask[:, None, None, :].expand(b, 1, s, s) >= 1
        mask = torch.where(keep, torch.tensor(0.0), torch.tensor(torch.finfo(torch.float32).min))
        for layer in self.layer:
            x = layer(x, mask)
        return x


# ---------------------------------------------------------------------------------------------
# Voice-activity detectors


def _vad_frontend_py(x: torch.Tensor, sr: torch.Tensor, w16: torch.Tensor, w8: torch.Tensor) -> torch.Tensor:
    """The sample-rate switch Silero models script: 16 kHz and 8 kHz audio take different front-ends."""
    if bool(sr == 16000):
        out = torch.conv1d(x.unsqueeze(1), w16, stride=8)
    else:
        out = torch.conv1d(x.unsqueeze(1), w8, stride=4)
    return torch.relu(out)


with warnings.catch_warnings():  # scripting (deprecated, but what Silero's export is made of) keeps the If
    warnings.simplefilter("ignore", DeprecationWarning)
    _vad_frontend = torch.jit.script(_vad_frontend_py)


class SileroVAD(nn.Module):
    """Front-end picked by ``sr`` (an ``If`` node), a conv encoder, one LSTM step carrying ``state``."""

    def __init__(self, hidden: int = 128, channels: int = 64):
        super().__init__()
        self.w16 = nn.Parameter(torch.empty(channels, 1, 16))  # 512 samples -> 63 frames
        self.w8 = nn.Parameter(torch.empty(channels, 1, 8))  # 256 samples -> 63 frames
        self.encoder = nn.Sequential(nn.Conv1d(channels, hidden, 3, stride=2), nn.ReLU())
        self.rnn = nn.LSTM(hidden, hidden)
        self.decoder = nn.Linear(hidden, 1)

    def forward(self, x, state, sr):
        feat = self.encoder(_vad_frontend(x, sr, self.w16, self.w8)).mean(dim=2)  # [b, hidden]
        out, (h, c) = self.rnn(feat.unsqueeze(0), (state[0:1], state[1:2]))
        prob = torch.sigmoid(self.decoder(torch.relu(out[0])))
        return prob, torch.cat([h, c], dim=0)


class SequenceLSTM(nn.Module):
    """Per-frame speech probability over a sequence: ``x`` [time, 1, features], state [1, 1, hidden]."""

    def __init__(self, features: int = 40, hidden: int = 128):
        super().__init__()
        self.proj = nn.Linear(features, 64)
        self.rnn = nn.LSTM(64, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x, h0, c0):
        y, (h, c) = self.rnn(torch.relu(self.proj(x)), (h0, c0))
        return torch.sigmoid(self.head(y)), h, c


# ---------------------------------------------------------------------------------------------
# Paddle2ONNX style


class PaddleConvNet(nn.Module):
    """Conv-BN-hardswish stages, global pool, a BatchNorm on the rank-2 features, classifier."""

    def __init__(self, widths=(16, 32, 64), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.Hardswish()]
            c_in = w
        self.backbone = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c_in, 96)
        self.bn = nn.BatchNorm1d(96)
        self.fc2 = nn.Linear(96, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)
        return self.fc2(F.hardswish(self.bn(self.fc1(x))))


def constants_from_initializers(model):
    """Move every initializer of ``model`` into a ``Constant`` node in front of the graph (in place)."""
    from onnx import helper

    nodes = [helper.make_node("Constant", [], [init.name], name=f"const_{i}", value=init)
             for i, init in enumerate(model.graph.initializer)]
    init_names = {init.name for init in model.graph.initializer}
    kept_inputs = [vi for vi in model.graph.input if vi.name not in init_names]
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    del model.graph.initializer[:]
    rest = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + rest)
    return model


# ---------------------------------------------------------------------------------------------
# Export


def export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
           dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = 17) -> Path:
    """``torch.onnx.export(dynamo=False, do_constant_folding=True)``, quietly, as model owners export."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or {}, opset_version=opset, dynamo=False, do_constant_folding=True)
    return path


def _image_lookalike(name: str, module: nn.Module, size: int, folder: Path, imitates: str, batch: int = 2) -> LookAlike:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(SEED + 1))
    path = export(module, (x,), folder / f"{name}.onnx", ["input"], ["logits"], {"input": {0: "batch"}, "logits": {0: "batch"}})
    return LookAlike(name, path, {"input": x.numpy()}, imitates, 17, module)


def _zero_shift_second_bn(name: str) -> bool:
    return name.endswith("bn2") or name.endswith("conv.3")  # last BN of each residual block


def resnet18(folder: Path) -> LookAlike:
    module = _init(ResNet(), zero_shift=_zero_shift_second_bn)
    return _image_lookalike("resnet18", module, 224, folder, "torchvision resnet18 (11.7M params, 1.82 GMACs)", batch=1)


def resnet_small(folder: Path) -> LookAlike:
    module = _init(ResNet((16, 32, 64, 128), (2, 2, 2, 2), num_classes=10), zero_shift=_zero_shift_second_bn)
    return _image_lookalike("resnet-small", module, 64, folder, "torchvision resnet18, scaled down")


def mobilenetv2(folder: Path) -> LookAlike:
    module = _init(MobileNetV2(), zero_shift=_zero_shift_second_bn)
    return _image_lookalike("mobilenetv2", module, 224, folder, "torchvision mobilenet_v2 (3.5M params, 0.30 GMACs)", batch=1)


def mobilenetv2_small(folder: Path) -> LookAlike:
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 1, 2))
    module = _init(MobileNetV2(0.5, settings, last=256, num_classes=10), zero_shift=_zero_shift_second_bn)
    return _image_lookalike("mobilenetv2-small", module, 64, folder, "torchvision mobilenet_v2, scaled down")


def bert(folder: Path) -> LookAlike:
    module = _init(BertEncoder())
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, 1000, (2, 16), generator=gen)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0  # the second sequence is padded
    types = torch.zeros(2, 16, dtype=torch.int64)
    types[:, 8:] = 1
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")}
    path = export(module, (ids, mask, types), folder / "bert.onnx", ["input_ids", "attention_mask", "token_type_ids"],
                  ["last_hidden_state"], axes)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    return LookAlike("bert", path, feeds, "HF transformers BERT encoder (sentence-transformers export)", 17, module)


def silero_vad(folder: Path) -> LookAlike:
    module = _init(SileroVAD())
    with torch.no_grad():
        gen = torch.Generator().manual_seed(SEED + 2)
        module.w16.copy_(torch.randn(module.w16.shape, generator=gen) * 0.25)
        module.w8.copy_(torch.randn(module.w8.shape, generator=gen) * 0.35)
    gen = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(1, 512, generator=gen)
    state = 0.1 * torch.randn(2, 1, 128, generator=gen)
    sr = torch.tensor(16000, dtype=torch.int64)
    path = export(module, (x, state, sr), folder / "silero-vad.onnx", ["input", "state", "sr"], ["output", "stateN"],
                  {"input": {0: "batch", 1: "samples"}, "state": {1: "batch"}, "output": {0: "batch"}, "stateN": {1: "batch"}})
    feeds = {"input": x.numpy(), "state": state.numpy(), "sr": sr.numpy()}
    return LookAlike("silero-vad", path, feeds, "Silero VAD (state [2, batch, 128], scalar sr, If on sr)", 17, module)


def sequence_lstm(folder: Path) -> LookAlike:
    module = _init(SequenceLSTM())
    gen = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(40, 1, 40, generator=gen)
    h0 = 0.1 * torch.randn(1, 1, 128, generator=gen)
    c0 = 0.1 * torch.randn(1, 1, 128, generator=gen)
    path = export(module, (x, h0, c0), folder / "sequence-lstm.onnx", ["x", "h0", "c0"], ["prob", "hn", "cn"],
                  {"x": {0: "time"}, "prob": {0: "time"}})
    return LookAlike("sequence-lstm", path, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()},
                     "LSTM speech detector over time (dim 0 = time, h/c [1, 1, 128])", 17, module)


def paddle_convnet(folder: Path) -> LookAlike:
    import onnx

    module = _init(PaddleConvNet())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(SEED + 1))
    path = export(module, (x,), folder / "paddle-convnet.onnx", ["x"], ["logits"], {"x": {0: "batch"}, "logits": {0: "batch"}}, opset=12)
    model = constants_from_initializers(onnx.load(str(path)))
    onnx.save(model, str(path))
    return LookAlike("paddle-convnet", path, {"x": x.numpy()}, "Paddle2ONNX export (opset 12, weights in Constant nodes)", 12, module)


BUILDERS: dict[str, Callable[[Path], LookAlike]] = {
    "resnet18": resnet18,
    "resnet-small": resnet_small,
    "mobilenetv2": mobilenetv2,
    "mobilenetv2-small": mobilenetv2_small,
    "bert": bert,
    "silero-vad": silero_vad,
    "sequence-lstm": sequence_lstm,
    "paddle-convnet": paddle_convnet,
}
#: The small ones: each builds and exports in about a second.
SMALL = ("resnet-small", "mobilenetv2-small", "bert", "silero-vad", "sequence-lstm", "paddle-convnet")


def per_feed_npz(la: LookAlike, path: str | Path, feeds: int = 12, noise: float = 0.05, seed: int = SEED) -> Path:
    """Write ``feeds`` whole feeds of ``la`` to a ``.npz`` (each array one rank above its input:
    ``arr[i]`` is feed i): float inputs are the look-alike's verification feed plus seeded noise,
    other inputs (a sample rate) repeat it. The way a recorded stream of a stateful model is saved."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, value in la.feeds.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            arrays[name] = np.stack([value + noise * rng.standard_normal(value.shape).astype(value.dtype)
                                     for _ in range(feeds)])
        else:
            arrays[name] = np.stack([value] * feeds)
    path = Path(path)
    np.savez(path, **arrays)
    return path


def build_lookalike(name: str, folder: str | Path) -> LookAlike:
    """Build look-alike ``name`` (one of :data:`BUILDERS`) and export it into ``folder``."""
    if name not in BUILDERS:
        raise ValueError(f"look-alike must be one of {', '.join(BUILDERS)}; got {name!r}")
    torch.manual_seed(SEED)
    return BUILDERS[name](Path(folder))


__all__ = ["BUILDERS", "SMALL", "LookAlike", "build_lookalike", "constants_from_initializers", "export", "per_feed_npz"]
