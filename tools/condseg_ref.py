#!/usr/bin/python3
"""condseg_ref.py — PyTorch reference implementation of ConDSeg, written from the spec.

Source of truth: design/condseg.md (§1–§5, §10). Nothing here is copied from the upstream
code; the module/attribute names and registration order are chosen so that `state_dict()`
reproduces tests/data/condseg_keys.tsv and stage1_keys.tsv exactly (names, shapes, order).

Contents:
  * the blocks of §2 (CBR, channel/spatial attention, FEM, ResNet-50 trunk, SID, aux head,
    CDFA preprocess, CDFA, decoder, output block) and the networks ConDSeg (§3) and
    ConDSegStage1 (§4);
  * `probes(model, x)`: named intermediates (the §3.1 table) for the golden files;
  * `randomize_(model, seed, calib)`: deterministic weights with realistic BN statistics;
  * the losses of §5 (DiceBCE with the double sigmoid, stage-2, stage-1);
  * safetensors weight loading/saving helpers (via tools/st_io.py);
  * `--selfcheck`: key lists, parameter counts, an independent per-pixel CDFA, the
    align_corners upsampling formula. Exits non-zero on any failure (ctest reference_selfcheck).

Run with /usr/bin/python3 (Debian's python3-torch 1.13).
"""
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS_TSV = {
    "condseg": os.path.join(HERE, "..", "tests", "data", "condseg_keys.tsv"),
    "stage1": os.path.join(HERE, "..", "tests", "data", "stage1_keys.tsv"),
}
TRUNK_PREFIXES = ("layer0.", "layer1.", "layer2.", "layer3.")

# Network presets (model/nets/condseg_net.c has the same table). condseg-r50 is the paper's
# network; condseg-compact keeps every part with a BasicBlock trunk (expansion 1) and
# narrower widths. Fields: stem output, block expansion, blocks and widths of layer1..3,
# FEM/SID/CDFA/decoder width, SID hidden width, auxiliary-head widths, CDFA heads, output
# block hidden width, stage-1 head width.
PRESETS = {
    "condseg-r50": dict(stem=64, expansion=4, blocks=(3, 4, 6), widths=(64, 128, 256),
                        dim=128, sid_hidden=512, aux=(256, 256, 128, 64, 64), heads=4,
                        out_hidden=64, stage1_head=64),
    "condseg-compact": dict(stem=32, expansion=1, blocks=(2, 2, 2), widths=(32, 64, 128),
                            dim=32, sid_hidden=64, aux=(32, 32, 32, 16, 16), heads=4,
                            out_hidden=16, stage1_head=16),
}
DEFAULT_PRESET = "condseg-r50"


def trunk_channels(cfg):
    """Channels of x1..x4."""
    return (cfg["stem"],) + tuple(w * cfg["expansion"] for w in cfg["widths"])


def up(k):
    """Bilinear ×k, align_corners=True (§1.4)."""
    return nn.Upsample(scale_factor=k, mode="bilinear", align_corners=True)


# ---------------------------------------------------------------------------------
# §2.1–§2.4 small blocks
# ---------------------------------------------------------------------------------
def channel_attention_f(x, fc1, fc2):
    """§2.2 as a function of the weights (also used by the op golden files)."""
    a = x.mean(dim=(2, 3), keepdim=True)
    m = x.amax(dim=(2, 3), keepdim=True)
    z = F.conv2d(F.relu(F.conv2d(a, fc1)), fc2) + F.conv2d(F.relu(F.conv2d(m, fc1)), fc2)
    return x * torch.sigmoid(z)


def spatial_attention_f(x, conv1):
    """§2.3 as a function of the weight: channel 0 = mean, channel 1 = max."""
    s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    return x * torch.sigmoid(F.conv2d(s, conv1, padding=3))


class CBR(nn.Module):
    """Conv (no bias) + BN + optional ReLU (§2.1). Keys: conv.0.weight, conv.1.*"""

    def __init__(self, in_c, out_c, kernel_size=3, padding=1, dilation=1, stride=1, act=True):
        super().__init__()
        self.act = act
        self.conv = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel_size, padding=padding, dilation=dilation,
                      stride=stride, bias=False),
            nn.BatchNorm2d(out_c))
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.conv(x)
        return self.relu(x) if self.act else x


class ChannelAttention(nn.Module):
    """§2.2: shared fc1/fc2 on the avg- and max-pooled vectors; hidden width C//16 always."""

    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // 16, 1, bias=False)
        self.fc2 = nn.Conv2d(c // 16, c, 1, bias=False)

    def forward(self, x):
        return channel_attention_f(x, self.fc1.weight, self.fc2.weight)


class SpatialAttention(nn.Module):
    """§2.3: 7×7 conv on cat[channel mean, channel max]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        return spatial_attention_f(x, self.conv1.weight)


class DilatedConv(nn.Module):
    """FEM (§2.4), out_c = 128."""

    def __init__(self, in_c, out_c=128):
        super().__init__()
        self.c1 = nn.Sequential(CBR(in_c, out_c, 1, 0), ChannelAttention(out_c))
        self.c2 = nn.Sequential(CBR(in_c, out_c, 3, 6, 6), ChannelAttention(out_c))
        self.c3 = nn.Sequential(CBR(in_c, out_c, 3, 12, 12), ChannelAttention(out_c))
        self.c4 = nn.Sequential(CBR(in_c, out_c, 3, 18, 18), ChannelAttention(out_c))
        self.c5 = CBR(4 * out_c, out_c, 3, 1, act=False)
        self.c6 = CBR(in_c, out_c, 1, 0, act=False)
        self.sa = SpatialAttention()

    def forward(self, x):
        xc = self.c5(torch.cat([self.c1(x), self.c2(x), self.c3(x), self.c4(x)], dim=1))
        r = F.relu(xc + self.c6(x))
        return self.sa(r)


# ---------------------------------------------------------------------------------
# §2.5 ResNet-50 trunk (torchvision layout, V1.5)
# ---------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    def __init__(self, in_c, width, stride=1, downsample=False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.relu = nn.ReLU()
        self.downsample = None
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_c, 4 * width, 1, stride=stride, bias=False),
                nn.BatchNorm2d(4 * width))

    def forward(self, x):
        t = self.relu(self.bn1(self.conv1(x)))
        t = self.relu(self.bn2(self.conv2(t)))
        t = self.bn3(self.conv3(t))
        s = x if self.downsample is None else self.downsample(x)
        return self.relu(t + s)


class BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block (the compact preset's trunk)."""

    def __init__(self, in_c, width, stride=1, downsample=False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.downsample = None
        if downsample:
            self.downsample = nn.Sequential(nn.Conv2d(in_c, width, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(width))

    def forward(self, x):
        t = self.relu(self.bn1(self.conv1(x)))
        t = self.bn2(self.conv2(t))
        s = x if self.downsample is None else self.downsample(x)
        return self.relu(t + s)


def _res_layer(in_c, width, blocks, stride, expansion=4):
    """torchvision's _make_layer: block 0 gets a downsample when the shape changes."""
    block = Bottleneck if expansion == 4 else BasicBlock
    out_c = expansion * width
    mods = [block(in_c, width, stride, downsample=stride != 1 or in_c != out_c)]
    mods += [block(out_c, width) for _ in range(blocks - 1)]
    return nn.Sequential(*mods)


def _add_trunk(m, cfg):
    """Registers layer0…layer3 on module m (shared by both networks, identical names)."""
    stem, e, (b1, b2, b3), (w1, w2, w3) = cfg["stem"], cfg["expansion"], cfg["blocks"], cfg["widths"]
    m.layer0 = nn.Sequential(nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False),
                             nn.BatchNorm2d(stem), nn.ReLU())
    # layer1 = [maxpool, [blocks]]: hence the "layer1.1.<i>" key prefix (§10.2).
    m.layer1 = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), _res_layer(stem, w1, b1, 1, e))
    m.layer2 = _res_layer(e * w1, w2, b2, 2, e)
    m.layer3 = _res_layer(e * w2, w3, b3, 2, e)


# ---------------------------------------------------------------------------------
# §2.6–§2.11
# ---------------------------------------------------------------------------------
class DecoupleLayer(nn.Module):
    """SID (§2.6)."""

    def __init__(self, in_c=1024, out_c=128, hidden=512):
        super().__init__()

        def branch():
            return nn.Sequential(CBR(in_c, hidden, 3, 1), CBR(hidden, out_c, 3, 1),
                                 CBR(out_c, out_c, 1, 0))
        self.cbr_fg = branch()
        self.cbr_bg = branch()
        self.cbr_uc = branch()

    def forward(self, x):
        return self.cbr_fg(x), self.cbr_bg(x), self.cbr_uc(x)


class AuxiliaryHead(nn.Module):
    """§2.7: three independent branches 1/16 → full resolution, sigmoid outputs."""

    def __init__(self, in_c=128, widths=(256, 256, 128, 64, 64)):
        super().__init__()

        def branch():
            a, b, c, d, e = widths
            return nn.Sequential(
                CBR(in_c, a, 3, 1), up(2), CBR(a, b, 3, 1), up(2),
                CBR(b, c, 3, 1), up(2), CBR(c, d, 3, 1), up(2),
                CBR(d, e, 3, 1), nn.Conv2d(e, 1, 1, bias=True), nn.Sigmoid())
        self.branch_fg = branch()
        self.branch_bg = branch()
        self.branch_uc = branch()

    def forward(self, f_fg, f_bg, f_uc):
        return self.branch_fg(f_fg), self.branch_bg(f_bg), self.branch_uc(f_uc)


class CDFAPreprocess(nn.Module):
    """§2.8: c1 then log2(s) × (up×2, CBR3). `preprocess` is registered before `c1`."""

    def __init__(self, in_c=128, out_c=128, up_scale=1):
        super().__init__()
        n = int(round(math.log2(up_scale)))
        seq = OrderedDict()
        for i in range(n):
            seq[f"up_{i}"] = up(2)
            seq[f"conv_{i}"] = CBR(out_c, out_c, 3, 1)
        self.preprocess = nn.Sequential(seq)
        self.c1 = CBR(in_c, out_c, 3, 1)

    def forward(self, x):
        return self.preprocess(self.c1(x))


def outlook_attention(v, a, heads, scale, k=3):
    """One CDFA attention pass without the projections (§2.9.1 steps 3.1–3.5), laid out as
    §2.9.2 with F.unfold/F.fold.
    v: value map B×C×H×W; a: raw attention-Linear output B×(heads·k⁴)×H×W with channel
    h·81 + i·9 + j. Returns the folded (un-normalized overlap-add) map B×C×H×W."""
    B, C, H, W = v.shape
    L = H * W
    K = k * k
    hd = C // heads
    pad = k // 2
    # unfold: B×(C·9)×L, channel c·9 + slot → B×heads×L×9×hd
    vu = F.unfold(v, k, padding=pad, stride=1).reshape(B, heads, hd, K, L).permute(0, 1, 4, 3, 2)
    # attention logits NHWC → B×L×heads×9×9 → B×heads×L×9×9
    att = a.permute(0, 2, 3, 1).reshape(B, L, heads, K, K).permute(0, 2, 1, 3, 4)
    att = (att * scale).softmax(dim=-1)
    o = att @ vu                                             # B×heads×L×9(i)×hd
    o = o.permute(0, 1, 4, 3, 2).reshape(B, C * K, L)        # channel (h·hd + d)·9 + i
    return F.fold(o, (H, W), k, padding=pad, stride=1)


class CDFA(nn.Module):
    """Contrast-Driven Feature Aggregation (§2.9). Linear layers are registered before the
    CBRs (state-dict order of the tsv)."""

    def __init__(self, in_c, dim=128, num_heads=4, kernel_size=3):
        super().__init__()
        self.dim, self.num_heads, self.k = dim, num_heads, kernel_size
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        nk = num_heads * kernel_size ** 4
        self.v = nn.Linear(dim, dim)
        self.attn_fg = nn.Linear(dim, nk)
        self.attn_bg = nn.Linear(dim, nk)
        self.proj = nn.Linear(dim, dim)
        self.input_cbr = nn.Sequential(CBR(in_c, dim, 3, 1), CBR(dim, dim, 3, 1))
        self.output_cbr = nn.Sequential(CBR(dim, dim, 3, 1), CBR(dim, dim, 3, 1))

    @staticmethod
    def _lin(lin, x):
        """Per-pixel Linear on the NHWC view (§1.6), returned as NCHW."""
        return lin(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x, fg, bg):
        t = self.input_cbr(x)
        val = self._lin(self.v, t)
        y = outlook_attention(val, self._lin(self.attn_fg, fg), self.num_heads, self.scale, self.k)
        z1 = self._lin(self.proj, y)
        # pass 2: the value map is proj's output itself (v not applied again), same proj
        y = outlook_attention(z1, self._lin(self.attn_bg, bg), self.num_heads, self.scale, self.k)
        z2 = self._lin(self.proj, y)
        return self.output_cbr(z2)


class DecoderBlock(nn.Module):
    """§2.10."""

    def __init__(self, in_c=128, out_c=128):
        super().__init__()
        self.up = up(2)
        self.c1 = CBR(in_c + out_c, out_c, 1, 0)
        self.c2 = CBR(out_c, out_c, 3, 1, act=False)
        self.c3 = CBR(out_c, out_c, 3, 1, act=False)
        self.c4 = CBR(out_c, out_c, 1, 0, act=False)
        self.ca = ChannelAttention(out_c)
        self.sa = SpatialAttention()

    def forward(self, x, skip):
        s1 = self.c1(torch.cat([self.up(x), skip], dim=1))
        s2 = F.relu(self.c2(s1) + s1)
        s3 = F.relu(self.c3(s2) + s2 + s1)
        r = F.relu(self.c4(s3) + s3 + s2 + s1)
        return self.sa(self.ca(r))


class OutputBlock(nn.Module):
    """§2.11."""

    def __init__(self, in_c=128, out_c=1, hidden=64):
        super().__init__()
        self.up_2x2 = up(2)
        self.up_4x4 = up(4)
        self.fuse = CBR(3 * in_c, in_c, 3, 1)
        self.c1 = CBR(in_c, in_c, 3, 1)
        self.c2 = CBR(in_c, hidden, 1, 0)
        self.c3 = nn.Conv2d(hidden, out_c, 1, bias=True)
        self.sig = nn.Sigmoid()

    def forward(self, x1, x2, x3):
        z = self.fuse(torch.cat([x1, self.up_2x2(x2), self.up_4x4(x3)], dim=1))
        z = self.up_2x2(z)
        return self.sig(self.c3(self.c2(self.c1(z))))


# ---------------------------------------------------------------------------------
# §3 ConDSeg and §4 ConDSegStage1
# ---------------------------------------------------------------------------------
FULL_PROBES = ("x1 x2 x3 x4 d1 d2 d3 d4 f_fg f_bg f_uc mask_fg mask_bg mask_uc f_fg4 f_bg4 "
               "f_fg3 f_bg3 f_fg2 f_bg2 f_fg1 f_bg1 f4 f3 f2 f1 f_small f_middle f_large mask").split()
STAGE1_PROBES = "x1 x2 x3 x4 pred".split()


class ConDSeg(nn.Module):
    arch = "condseg"

    def __init__(self, preset=DEFAULT_PRESET):
        super().__init__()
        self.preset = preset
        cfg = PRESETS[preset]
        c1, c2, c3, c4 = trunk_channels(cfg)
        d = cfg["dim"]
        _add_trunk(self, cfg)
        self.dconv1 = DilatedConv(c1, d)
        self.dconv2 = DilatedConv(c2, d)
        self.dconv3 = DilatedConv(c3, d)
        self.dconv4 = DilatedConv(c4, d)
        self.decouple_layer = DecoupleLayer(c4, d, cfg["sid_hidden"])
        for s, scale in ((4, 1), (3, 2), (2, 4), (1, 8)):
            setattr(self, f"preprocess_fg{s}", CDFAPreprocess(d, d, scale))
            setattr(self, f"preprocess_bg{s}", CDFAPreprocess(d, d, scale))
        self.aux_head = AuxiliaryHead(d, cfg["aux"])
        self.up2X = up(2)
        self.cdfa4 = CDFA(d, d, cfg["heads"])
        self.cdfa3 = CDFA(2 * d, d, cfg["heads"])
        self.cdfa2 = CDFA(2 * d, d, cfg["heads"])
        self.cdfa1 = CDFA(2 * d, d, cfg["heads"])
        self.decoder_small = DecoderBlock(d, d)
        self.decoder_middle = DecoderBlock(d, d)
        self.decoder_large = DecoderBlock(d, d)
        self.output_block = OutputBlock(d, 1, cfg["out_hidden"])

    def run(self, x, rec=None, mask_only=False):
        """The §3.1 graph. `rec` (dict) receives the named intermediates; with mask_only the
        parts `mask` does not depend on (aux_head, cbr_uc, §3.2) are skipped."""
        r = rec if rec is not None else {}
        r["x1"] = x1 = self.layer0(x)
        r["x2"] = x2 = self.layer1(x1)
        r["x3"] = x3 = self.layer2(x2)
        r["x4"] = x4 = self.layer3(x3)
        r["d1"] = d1 = self.dconv1(x1)
        r["d2"] = d2 = self.dconv2(x2)
        r["d3"] = d3 = self.dconv3(x3)
        r["d4"] = d4 = self.dconv4(x4)
        dl = self.decouple_layer
        r["f_fg"] = f_fg = dl.cbr_fg(x4)
        r["f_bg"] = f_bg = dl.cbr_bg(x4)
        if not mask_only:
            r["f_uc"] = f_uc = dl.cbr_uc(x4)
            r["mask_fg"], r["mask_bg"], r["mask_uc"] = self.aux_head(f_fg, f_bg, f_uc)
        for s in (4, 3, 2, 1):
            r[f"f_fg{s}"] = getattr(self, f"preprocess_fg{s}")(f_fg)
            r[f"f_bg{s}"] = getattr(self, f"preprocess_bg{s}")(f_bg)
        r["f4"] = f4 = self.cdfa4(d4, r["f_fg4"], r["f_bg4"])
        r["f3"] = f3 = self.cdfa3(torch.cat([d3, self.up2X(f4)], 1), r["f_fg3"], r["f_bg3"])
        r["f2"] = f2 = self.cdfa2(torch.cat([d2, self.up2X(f3)], 1), r["f_fg2"], r["f_bg2"])
        r["f1"] = f1 = self.cdfa1(torch.cat([d1, self.up2X(f2)], 1), r["f_fg1"], r["f_bg1"])
        r["f_small"] = fs = self.decoder_small(f2, f1)
        r["f_middle"] = fm = self.decoder_middle(f3, f2)
        r["f_large"] = fl = self.decoder_large(f4, f3)
        r["mask"] = self.output_block(fs, fm, fl)
        return r

    def forward(self, x):
        r = self.run(x)
        return r["mask"], r["mask_fg"], r["mask_bg"], r["mask_uc"]

    def forward_mask(self, x):
        return self.run(x, mask_only=True)["mask"]


class Adjust(nn.Module):
    """Stage-1 head (§4.1, class `adjust`)."""

    def __init__(self, chans=(64, 256, 512, 1024), mid=64):
        super().__init__()
        for i, c in enumerate(chans):
            setattr(self, f"conv{i + 1}", CBR(c, mid, 1, 0))
        self.conv_fuse = nn.Conv2d(mid * len(chans), 1, 1, bias=False)


class ConDSegStage1(nn.Module):
    arch = "stage1"

    def __init__(self, preset=DEFAULT_PRESET):
        super().__init__()
        self.preset = preset
        cfg = PRESETS[preset]
        _add_trunk(self, cfg)
        self.head = Adjust(trunk_channels(cfg), cfg["stage1_head"])
        self.up_2x2, self.up_4x4, self.up_8x8, self.up_16x16 = up(2), up(4), up(8), up(16)

    def run(self, x, rec=None):
        r = rec if rec is not None else {}
        r["x1"] = x1 = self.layer0(x)
        r["x2"] = x2 = self.layer1(x1)
        r["x3"] = x3 = self.layer2(x2)
        r["x4"] = x4 = self.layer3(x3)
        h = self.head
        # BN+ReLU after the upsampling (batch statistics over the full-resolution maps).
        g = [h.conv1(self.up_2x2(x1)), h.conv2(self.up_4x4(x2)),
             h.conv3(self.up_8x8(x3)), h.conv4(self.up_16x16(x4))]
        r["pred"] = torch.sigmoid(h.conv_fuse(torch.cat(g, 1)))
        return r

    def forward(self, x):
        return self.run(x)["pred"]


def build(arch, preset=DEFAULT_PRESET):
    return {"condseg": ConDSeg, "full": ConDSeg, "stage1": ConDSegStage1}[arch](preset)


def probes(model, x):
    """OrderedDict name → tensor of the named intermediates (§3.1 table / stage-1 list)."""
    rec = {}
    model.run(x, rec)
    names = FULL_PROBES if isinstance(model, ConDSeg) else STAGE1_PROBES
    return OrderedDict((n, rec[n]) for n in names)


# ---------------------------------------------------------------------------------
# key lists, weights
# ---------------------------------------------------------------------------------
def read_tsv(path):
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header == ["name", "shape", "dtype"], header
        for line in f:
            if not line.strip():
                continue
            name, shape, dtype = line.rstrip("\n").split("\t")
            shp = [] if shape == "scalar" else [int(s) for s in shape.split("x")]
            rows.append((name, shp, dtype))
    return rows


def check_keys(model, tsv_path=None):
    """Asserts that model.state_dict() has exactly the tsv's names, shapes, dtypes, order."""
    tsv_path = tsv_path or KEYS_TSV[model.arch]
    want = read_tsv(tsv_path)
    sd = model.state_dict()
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                raise AssertionError(f"{tsv_path}: entry {i}: model {g} != tsv {w}")
        raise AssertionError(f"{tsv_path}: {len(got)} model entries vs {len(want)} in the tsv")
    return len(got)


def is_stage1_keys(keys):
    return any(k.startswith("head.") for k in keys)


def state_dict_np(model):
    """State dict as numpy: float tensors as float32, num_batches_tracked as int64 scalars."""
    out = OrderedDict()
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        out[k] = v.numpy().astype(np.int64) if k.endswith("num_batches_tracked") else \
            v.float().numpy()
    return out


def weights_metadata(arch, preset=DEFAULT_PRESET):
    return {"format": "pt", "condseg.arch": arch, "condseg.preset": preset}


def save_weights(model, path):
    st_io.save_file(state_dict_np(model), path, weights_metadata(model.arch, model.preset))


def load_weights(model, path):
    """Loads a safetensors state dict by name, strictly (only a missing num_batches_tracked,
    which §10.1 allows to drop, is tolerated: it is unused by the math)."""
    tensors, _ = st_io.load_file(path)
    sd = model.state_dict()
    missing = [k for k in sd if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in sd]
    bad = [f"{k}: file {list(tensors[k].shape)} vs model {list(sd[k].shape)}"
           for k in sd if k in tensors and list(tensors[k].shape) != list(sd[k].shape)
           and not (k.endswith("num_batches_tracked") and tensors[k].size == 1)]
    if missing or unexpected or bad:
        raise ValueError(f"{path}: missing {missing[:10]} unexpected {unexpected[:10]} "
                         f"misshapen {bad[:10]} ({len(missing)}/{len(unexpected)}/{len(bad)})")
    new = OrderedDict()
    for k, v in sd.items():
        if k in tensors:
            new[k] = torch.from_numpy(np.asarray(tensors[k])).to(v.dtype).reshape(v.shape)
        else:
            new[k] = torch.zeros_like(v)
    model.load_state_dict(new, strict=True)
    return model


def arch_of_file(path):
    tensors, meta = st_io.load_file(path)
    return "stage1" if is_stage1_keys(tensors) else "condseg"


def preset_of_file(path):
    """The preset a weights file records (condseg.preset); the paper's when it records none
    (converted PyTorch checkpoints)."""
    _, meta = st_io.load_file(path)
    preset = (meta or {}).get("condseg.preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise ValueError(f"{path}: unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    return preset


def input_size_of_file(path, default=256):
    """The input size the weights were trained at (condseg.input_size), 256 when unrecorded."""
    _, meta = st_io.load_file(path)
    return int((meta or {}).get("condseg.input_size", default))


# ---------------------------------------------------------------------------------
# deterministic randomization with realistic BN statistics
# ---------------------------------------------------------------------------------
def randomize_(model, seed, calib, nbt=7, verbose=True):
    """Deterministic weights (§1.8 init, randomized BN affine), then BN running statistics
    equal to the batch statistics of one train-mode pass over `calib`. Leaves eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if name.startswith(TRUNK_PREFIXES):
                    # torchvision ResNet init: Kaiming normal, fan_out, ReLU gain
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    bound = 1.0 / math.sqrt(m.weight[0].numel())  # fan_in = I·kh·kw
                    m.weight.uniform_(-bound, bound)
                if m.bias is not None:
                    bound = 1.0 / math.sqrt(m.weight[0].numel())
                    m.bias.uniform_(-bound, bound)
            elif isinstance(m, nn.BatchNorm2d):
                # γ/β away from 1/0 so that a swapped γ/β or mean/var shows up in the tests.
                # β > 0 keeps most units active after each ReLU: with β centred on 0, half
                # of every layer is cut and this random network amplifies float32 rounding
                # ~1.3x per layer, so that even PyTorch float32 misses the float64 mask by
                # 1.6e-4; with β in [0.2, 0.6] it is ~1.6e-5, well under the 1e-4 the tests
                # demand of condseg (measured: see pytorch_f32_rel_err in the golden files).
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.2, 0.6)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch = that batch's stats
        model.train()
        p = next(model.parameters())
        calib = calib if isinstance(calib, (tuple, list)) else (calib,)
        out = model(*[c.to(p.dtype) for c in calib])
        for m in bns:
            m.momentum = 0.1
            m.num_batches_tracked.fill_(nbt)
    model.eval()
    if isinstance(model, (ConDSeg, ConDSegStage1)):
        # Train-mode outputs on the calibration batch ≈ eval outputs on it (BN stats are
        # that batch's): reject weights whose probabilities saturate.
        outs = out if isinstance(out, tuple) else (out,)
        names = ("mask", "mask_fg", "mask_bg", "mask_uc") if len(outs) == 4 else ("pred",)
        for n, o in zip(names, outs):
            line = saturation_report(n, o)
            if verbose:
                print(f"  randomize_(seed {seed}) calibration pass, {line}")
    return model


def saturation_report(name, p):
    """Raises when a probability map is (nearly) saturated; returns a one-line summary."""
    p = p.detach().double()
    std = p.std().item()
    frac_mid = ((p > 1e-3) & (p < 1 - 1e-3)).double().mean().item()
    line = (f"{name}: mean {p.mean().item():.4f} std {std:.4f} min {p.min().item():.4f} "
            f"max {p.max().item():.4f} frac(1e-3<p<1-1e-3) {frac_mid:.3f}")
    if std <= 0.02 or frac_mid < 0.5:
        raise RuntimeError("saturated/degenerate output: " + line)
    return line


# ---------------------------------------------------------------------------------
# §5 losses
# ---------------------------------------------------------------------------------
def dice_bce(p, y, smooth=1.0):
    """§5.1: DiceBCE on an already-sigmoided p, with the second sigmoid; batch-global sums."""
    s = torch.sigmoid(p).reshape(-1)
    y = y.reshape(-1)
    inter = (s * y).sum()
    dice = 1 - (2 * inter + smooth) / (s.sum() + y.sum() + smooth)
    bce = F.binary_cross_entropy(s, y, reduction="mean")
    return bce + dice


def beta_weight(p):
    """§5.2: β = 1/(tanh(Σ_batch p / (H·W)) + 1e-15), with gradient (H·W of the map)."""
    hw = p.shape[-2] * p.shape[-1]
    return 1.0 / (torch.tanh(p.sum() / hw) + 1e-15)


def complementary_loss(fg, bg, uc):
    q = torch.softmax(torch.stack([fg, bg, uc], dim=1), dim=1)
    qf, qb, qu = q[:, 0], q[:, 1], q[:, 2]
    return (qf * qb + qf * qu + qb * qu).mean()


def stage2_loss(mask, fg, bg, uc, y1, y2):
    """§5.2. Returns an OrderedDict with loss and its parts."""
    out = OrderedDict()
    out["loss_mask"] = dice_bce(mask, y1)
    out["loss_fg"] = dice_bce(fg, y1)
    out["loss_bg"] = dice_bce(bg, y2)
    out["beta1"] = beta_weight(fg)
    out["beta2"] = beta_weight(bg)
    out["loss_comp"] = complementary_loss(fg, bg, uc)
    out["loss"] = (out["loss_mask"] + out["beta1"] * out["loss_fg"] +
                   out["beta2"] * out["loss_bg"] + out["loss_comp"])
    out.move_to_end("loss", last=False)
    return out


def stage1_loss(pred, pred_aug, y1):
    """§5.3: DiceBCE on both predictions + symmetric consistency BCE against thresholded,
    gradient-free targets (strict >)."""
    t_aug = (pred_aug > 0.5).to(pred.dtype).detach()
    t = (pred > 0.5).to(pred.dtype).detach()
    cons = F.binary_cross_entropy(pred, t_aug) + F.binary_cross_entropy(pred_aug, t)
    return dice_bce(pred, y1) + dice_bce(pred_aug, y1) + cons


def stage1_loss_parts(pred, pred_aug, y1):
    """§5.3 split into its terms (OrderedDict: loss, loss_pred = L_DB(pred, y1),
    loss_pred_aug = L_DB(pred_aug, y1), loss_cons); loss equals stage1_loss."""
    t_aug = (pred_aug > 0.5).to(pred.dtype).detach()
    t = (pred > 0.5).to(pred.dtype).detach()
    out = OrderedDict()
    out["loss_pred"] = dice_bce(pred, y1)
    out["loss_pred_aug"] = dice_bce(pred_aug, y1)
    out["loss_cons"] = F.binary_cross_entropy(pred, t_aug) + F.binary_cross_entropy(pred_aug, t)
    out["loss"] = out["loss_pred"] + out["loss_pred_aug"] + out["loss_cons"]
    out.move_to_end("loss", last=False)
    return out


# ---------------------------------------------------------------------------------
# §6.6 stage-1 photometric augmentation (deterministic, given its parameters)
# ---------------------------------------------------------------------------------
def _gray(img):
    """torchvision rgb_to_grayscale weights on channels 0/1/2 (BGR data treated as RGB)."""
    return (0.2989 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]).unsqueeze(1)


def _blend(a, b, ratio):
    return (ratio * a + (1.0 - ratio) * b).clamp(0.0, 1.0)


def _rgb2hsv(img):
    r, g, b = img.unbind(dim=1)
    mx = img.amax(dim=1)
    mn = img.amin(dim=1)
    eqc = mx == mn
    cr = mx - mn
    ones = torch.ones_like(mx)
    s = cr / torch.where(eqc, ones, mx)
    d = torch.where(eqc, ones, cr)
    rc, gc, bc = (mx - r) / d, (mx - g) / d, (mx - b) / d
    h = torch.where(mx == r, bc - gc, torch.where(mx == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return h, s, mx


def _hsv2rgb(h, s, v):
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    table = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    out = torch.zeros(h.shape[0], 3, *h.shape[1:], dtype=h.dtype)
    for k, rgb in enumerate(table):
        sel = (i == k).unsqueeze(1)
        out = torch.where(sel, torch.stack(rgb, dim=1), out)
    return out


def gaussian_taps(sigma, k=7):
    """Normalized taps exp(−j²/(2σ²)) / Σ, j = −k//2 … k//2 (float64)."""
    j = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    w = torch.exp(-0.5 * (j / sigma) ** 2)
    return w / w.sum()


def photometric_aug(x, p):
    """§6.6 on a batch B×3×H×W in [0,1] with explicit parameters p (one set for the batch):
    p["order"] = permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue; factors
    p["brightness"], p["contrast"], p["saturation"], p["hue"]; p["grayscale"] (bool);
    p["sigma"] of the vertical 1×7 Gaussian blur (reflect padding). Channels 0/1/2 are
    treated as R/G/B as torchvision does on the original's BGR data. Computed in x's dtype."""
    img = x
    for op in p["order"]:
        if op == 0:
            img = _blend(img, torch.zeros_like(img), p["brightness"])
        elif op == 1:
            mean = _gray(img).mean(dim=(1, 2, 3), keepdim=True)  # one scalar per image
            img = _blend(img, mean, p["contrast"])
        elif op == 2:
            img = _blend(img, _gray(img), p["saturation"])
        elif op == 3:
            h, s, v = _rgb2hsv(img)
            img = _hsv2rgb(torch.remainder(h + p["hue"], 1.0), s, v)
        else:
            raise ValueError(f"unknown ColorJitter op {op}")
    if p["grayscale"]:
        img = _gray(img).expand(-1, 3, -1, -1).clone()
    w = gaussian_taps(p["sigma"]).to(img.dtype).reshape(1, 1, 7, 1).expand(3, 1, 7, 1)
    img = F.conv2d(F.pad(img, (0, 0, 3, 3), mode="reflect"), w, groups=3)
    return img


# ---------------------------------------------------------------------------------
# §6.1 Adam, written out (to check torch.optim.Adam against the spec's formula)
# ---------------------------------------------------------------------------------
def adam_reference_step(theta, grad, m, v, t, lr, betas=(0.9, 0.999), eps=1e-8):
    """One PyTorch-style Adam step (weight decay 0, no amsgrad) on tensors; returns the new
    (theta, m, v). t is the step count starting at 1."""
    b1, b2 = betas
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    step_size = lr / (1 - b1 ** t)
    denom = v.sqrt() / math.sqrt(1 - b2 ** t) + eps
    return theta - step_size * m / denom, m, v


# ---------------------------------------------------------------------------------
# self-check (ctest reference_selfcheck)
# ---------------------------------------------------------------------------------
def _cdfa_loops(mod, x, fg, bg):
    """Independent per-pixel implementation of §2.9.1 (explicit loops over pixels, heads,
    i, j; numpy float64). Uses only the module's parameters and its input/output CBRs."""
    def lin(l, m):  # per-pixel Linear, m: C×H×W
        W_ = l.weight.detach().double().numpy()
        b_ = l.bias.detach().double().numpy()
        C, H, Wd = m.shape
        out = np.zeros((W_.shape[0], H, Wd))
        for yy in range(H):
            for xx in range(Wd):
                out[:, yy, xx] = W_ @ m[:, yy, xx] + b_
        return out

    def one_pass(val, guide, attn_lin):
        C, H, Wd = val.shape
        heads, hd = mod.num_heads, C // mod.num_heads
        G = lin(attn_lin, guide)
        O = np.zeros((H, Wd, heads, 9, hd))
        deltas = [(k // 3 - 1, k % 3 - 1) for k in range(9)]
        for yy in range(H):
            for xx in range(Wd):
                for h in range(heads):
                    N = np.zeros((9, hd))
                    for j, (dy, dx) in enumerate(deltas):
                        qy, qx = yy + dy, xx + dx
                        if 0 <= qy < H and 0 <= qx < Wd:
                            N[j] = val[h * hd:(h + 1) * hd, qy, qx]
                    for i in range(9):
                        a = np.array([mod.scale * G[h * 81 + i * 9 + j, yy, xx] for j in range(9)])
                        e = np.exp(a - a.max())
                        P = e / e.sum()
                        O[yy, xx, h, i] = sum(P[j] * N[j] for j in range(9))
        Y = np.zeros((C, H, Wd))
        for yy in range(H):
            for xx in range(Wd):
                for h in range(heads):
                    for i, (dy, dx) in enumerate(deltas):
                        py, px = yy - dy, xx - dx
                        if 0 <= py < H and 0 <= px < Wd:
                            Y[h * hd:(h + 1) * hd, yy, xx] += O[py, px, h, i]
        return Y

    outs = []
    with torch.no_grad():
        t = mod.input_cbr(x)
        for b in range(x.shape[0]):
            V = lin(mod.v, t[b].numpy())
            z1 = lin(mod.proj, one_pass(V, fg[b].numpy(), mod.attn_fg))
            z2 = lin(mod.proj, one_pass(z1, bg[b].numpy(), mod.attn_bg))
            outs.append(z2)
        return mod.output_cbr(torch.from_numpy(np.stack(outs)))


def _upsample_formula(a, k):
    """§1.4 align_corners=True, written out with numpy (scale in float32 as specified)."""
    N, C, n_h, n_w = a.shape

    def axis(n):
        m = k * n
        scale = np.float32((n - 1) / (m - 1)) if m > 1 else np.float32(0)
        d = np.arange(m, dtype=np.float32)
        xs = (scale * d).astype(np.float32)
        i0 = np.floor(xs).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        l1 = (xs - i0).astype(np.float64)
        return i0, i1, 1 - l1, l1

    y0, y1, ly0, ly1 = axis(n_h)
    x0, x1, lx0, lx1 = axis(n_w)
    top = lx0 * a[:, :, y0][..., x0] + lx1 * a[:, :, y0][..., x1]
    bot = lx0 * a[:, :, y1][..., x0] + lx1 * a[:, :, y1][..., x1]
    return ly0[:, None] * top + ly1[:, None] * bot


def selfcheck():
    fails = []

    def check(cond, msg):
        print(("ok    " if cond else "FAIL  ") + msg)
        if not cond:
            fails.append(msg)

    torch.set_num_threads(os.cpu_count() or 1)
    # 1. key lists / shapes / order
    models = {}
    for arch, total in (("condseg", 45552786), ("stage1", 8662848)):
        m = build(arch)
        models[arch] = m
        try:
            n = check_keys(m, KEYS_TSV[arch])
            check(True, f"{arch}: {n} state-dict entries match {os.path.basename(KEYS_TSV[arch])}")
        except AssertionError as e:
            check(False, f"{arch}: {e}")
        nparam = sum(p.numel() for p in m.parameters())
        check(nparam == total, f"{arch}: {nparam:,} parameters (expected {total:,})")
    full = models["condseg"]
    per_module = {"layer0": 9536, "layer1": 215808, "layer2": 1219584, "layer3": 7098368,
                  "dconv1": 837218, "dconv2": 1549922, "dconv3": 2500194, "dconv4": 4400738,
                  "decouple_layer": 15979008, "preprocess_fg4": 147712, "preprocess_fg3": 295424,
                  "preprocess_fg2": 443136, "preprocess_fg1": 590848, "aux_head": 3875523,
                  "cdfa4": 707464, "cdfa1": 854920, "decoder_small": 347234,
                  "output_block": 598721}
    for mname, cnt in per_module.items():
        got = sum(p.numel() for p in getattr(full, mname).parameters())
        check(got == cnt, f"params {mname} {got:,} (expected {cnt:,})")
    check(sum(p.numel() for n, p in full.named_parameters()
              if not n.startswith(("aux_head.", "decouple_layer.cbr_uc."))) == 36350927,
          "mask-only parameters 36,350,927")

    # 2. shapes of the probes on a small input (everything scales with H, W)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    full.eval()
    with torch.no_grad():
        pr = probes(full, x)
    want = {"x1": (64, 2), "x2": (256, 4), "x3": (512, 8), "x4": (1024, 16), "d1": (128, 2),
            "d2": (128, 4), "d3": (128, 8), "d4": (128, 16), "f_fg": (128, 16), "mask": (1, 1),
            "mask_fg": (1, 1), "f_fg1": (128, 2), "f_bg2": (128, 4), "f_fg3": (128, 8),
            "f_bg4": (128, 16), "f1": (128, 2), "f2": (128, 4), "f3": (128, 8), "f4": (128, 16),
            "f_small": (128, 2), "f_middle": (128, 4), "f_large": (128, 8)}
    ok = list(pr.keys()) == FULL_PROBES and all(
        tuple(pr[k].shape) == (1, c, 64 // d, 64 // d) for k, (c, d) in want.items())
    check(ok, "probe names and shapes (64×64 input)")

    # 3. CDFA: module vs independent per-pixel loops (float64, tiny map)
    for in_c, H, W in ((128, 4, 5), (256, 3, 3)):
        torch.manual_seed(1)
        mod = CDFA(in_c).double()
        xin = torch.randn(2, in_c, H, W, dtype=torch.float64)
        fg = torch.rand(2, 128, H, W, dtype=torch.float64) * 2
        bg = torch.rand(2, 128, H, W, dtype=torch.float64) * 2
        randomize_(mod, 3, (xin, fg, bg), verbose=False)
        # make the attention sharp enough that a wrong i/j or slot order cannot hide
        with torch.no_grad():
            mod.attn_fg.weight.mul_(8)
            mod.attn_bg.weight.mul_(8)
            ref = _cdfa_loops(mod, xin, fg, bg)
            got = mod(xin, fg, bg)
        d = (ref - got).abs().max().item()
        check(d < 1e-5, f"CDFA (in_c {in_c}, {H}×{W}) module vs per-pixel loops: max |diff| {d:.2e}")

    # 4. align_corners=True bilinear formula vs F.interpolate
    for k in (2, 4, 8, 16):
        torch.manual_seed(k)
        a = torch.rand(2, 3, 5, 7)
        ref = torch.from_numpy(_upsample_formula(a.double().numpy(), k))
        got = F.interpolate(a, scale_factor=k, mode="bilinear", align_corners=True).double()
        got2 = up(k)(a).double()
        d = max((ref - got).abs().max().item(), (ref - got2).abs().max().item())
        check(d < 1e-5, f"upsample ×{k} align_corners formula vs F.interpolate: max |diff| {d:.2e}")

    # 5. losses: β gradient formula (§5.2) and DiceBCE gradient (§11) against autograd
    torch.manual_seed(5)
    p = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(2, 1, 8, 8, dtype=torch.float64) > 0.5).double()
    g, = torch.autograd.grad(dice_bce(p, y), p)
    sg = torch.sigmoid(p.detach())
    N = p.numel()
    I_ = (sg * y).sum()
    D = sg.sum() + y.sum() + 1
    want_g = (sg - y) / N - (2 * y * D - (2 * I_ + 1)) / D ** 2 * sg * (1 - sg)
    check((g - want_g).abs().max().item() < 1e-12, "DiceBCE gradient = §11 formula")
    b, = torch.autograd.grad(beta_weight(p), p)
    S = p.detach().sum() / 64
    want_b = -(1 - torch.tanh(S) ** 2) / (64 * (torch.tanh(S) + 1e-15) ** 2)
    check((b - want_b).abs().max().item() < 1e-12, "β gradient = §5.2 formula")

    if fails:
        print(f"{len(fails)} check(s) FAILED")
        return 1
    print("all reference self-checks passed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--selfcheck":
        sys.exit(selfcheck())
    print(__doc__)
    print("usage: condseg_ref.py --selfcheck")
    sys.exit(0 if len(sys.argv) == 1 else 2)
