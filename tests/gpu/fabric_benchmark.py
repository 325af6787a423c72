#!/usr/bin/env python3
"""Lightning Fabric on the workloads of mantissa_train_benchmark.

Re-measures Lightning Fabric on exactly the workloads of
tests/training/train_benchmark.cc: the same models (plain torch.nn mirrors of
server/models/mlp.cc and gpt.cc), sizes and --scale rounding, data shapes,
loss, AdamW defaults, timing and peak-memory basis. One JSON line per
workload x precision x mode, so the two benchmarks can be read side by side
(flags: --help).

Modes: "default" is Fabric as it comes (foreach AdamW); "tuned" adds fused
AdamW and torch.compile on CUDA, the row Mantissa has to beat.
--describe prints each model's parameter count and shapes without lightning,
to check them against Mantissa's on any machine. Exit status: 0, 1 if a run
failed, 2 on a usage error or when lightning is missing.
"""

import argparse
import gc
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

MIB = 1024.0 * 1024.0
DEFAULT_PRECISIONS = ["32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]
# Mantissa's AdamW defaults (server/training/job_spec_resolver.h).
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def scaled_width(width, scale, multiple=16):
    """train_benchmark.cc's ScaledWidth: a multiple of `multiple`, exact at scale 1."""
    return max(multiple, math.ceil(width * scale / multiple) * multiple)


def scaled_count(count, scale):
    """ScaledCount: std::llround rounds halves away from zero, unlike round()."""
    x = count * scale
    whole = math.floor(x)
    return max(1, whole + 1 if x - whole >= 0.5 else whole)


def workload_config(name, scale):
    """MlpWorkload / GptWorkload of train_benchmark.cc."""
    if name == "mlp":
        batch = scaled_count(8192, scale)
        width = scaled_width(4096, scale)
        return dict(batch=batch, features=scaled_width(1024, scale), hidden=[width] * 4,
                    classes=10, items_per_step=batch, unit="items")
    batch = scaled_count(16, scale)
    heads = min(12, scaled_count(12, scale))
    seq_len = scaled_width(512, scale)
    # gpt.h's default dropout is 0, which the benchmark keeps.
    return dict(batch=batch, vocab=scaled_width(8192, scale),
                d_model=scaled_width(768, scale, 16 * heads),
                layers=min(12, scaled_count(12, scale)), heads=heads, seq_len=seq_len,
                dropout=0.0, items_per_step=batch * seq_len, unit="tokens")


def dropout(x, p, training):
    # As gpt.cc: no dropout call at all when p is 0.
    return F.dropout(x, p, True) if training and p > 0 else x


def causal_attention(q, k, v, p, training):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p if training else 0.0,
                                              is_causal=True)
    # PyTorch < 2.0 (checks on old machines only): torch_compat.h's fallback.
    t = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    weights = scores.float().masked_fill(future, float("-inf")).softmax(-1).to(q.dtype)
    return dropout(weights, p, training) @ v


def build_mlp(cfg):
    """mlp.cc: Flatten, Linear + ReLU per hidden width, a final Linear."""
    layers, in_features = [nn.Flatten()], cfg["features"]
    for width in cfg["hidden"]:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, cfg["classes"]))
    return nn.Sequential(*layers)


class Block(nn.Module):
    """gpt.cc's BlockImpl: x + attn(ln1(x)), then x + fc_out(gelu(fc(ln2(x))))."""

    def __init__(self, d_model, heads, p):
        super().__init__()
        self.heads, self.p = heads, p
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + dropout(self.fc_out(F.gelu(self.fc(self.ln2(x)))), self.p, self.training)

    def attention(self, x):
        n, t, d = x.shape
        # [N, T, 3d] -> three [N, heads, T, head_dim]
        q, k, v = (self.qkv(x).view(n, t, 3, self.heads, d // self.heads)
                   .permute(2, 0, 3, 1, 4).unbind(0))
        y = causal_attention(q, k, v, self.p, self.training)
        return dropout(self.proj(y.transpose(1, 2).reshape(n, t, d)), self.p, self.training)


class Gpt(nn.Module):
    """gpt.cc's GptNetImpl: embeddings, pre-LN blocks, ln_f, an untied head."""

    def __init__(self, cfg):
        super().__init__()
        d, self.p = cfg["d_model"], cfg["dropout"]
        self.tok_emb = nn.Embedding(cfg["vocab"], d)
        self.pos_emb = nn.Embedding(cfg["seq_len"], d)
        self.blocks = nn.ModuleList(Block(d, cfg["heads"], self.p) for _ in range(cfg["layers"]))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg["vocab"], bias=False)
        # GPT-2 init, as InitGpt2: N(0, 0.02) weights, zero biases, LayerNorms (1, 0).
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, tokens):
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = dropout(self.tok_emb(tokens) + self.pos_emb(positions), self.p, self.training)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_model(name, cfg):
    return build_mlp(cfg) if name == "mlp" else Gpt(cfg)


def make_data(name, cfg, total_steps, device):
    """Every step's batch, on the device: [total_steps, batch, ...].

    Shapes and dtypes as Mantissa's synthetic datasets (train_size = batch x
    total_steps); the values follow their recipe but are not bit-identical.
    """
    gen = torch.Generator(device=device).manual_seed(1)
    b = cfg["batch"]
    if name == "mlp":
        centres = torch.randn(cfg["classes"], cfg["features"], generator=gen, device=device) * 2
        labels = torch.randint(0, cfg["classes"], (total_steps, b), generator=gen, device=device)
        noise = torch.randn(total_steps, b, cfg["features"], generator=gen, device=device)
        return centres[labels] + noise, labels
    # A random period-16 pattern, repeated; windows of seq_len + 1 tokens overlap by one.
    t = cfg["seq_len"]
    total = b * total_steps * t + 1
    pattern = torch.randint(0, cfg["vocab"], (16,), generator=gen, device=device)
    stream = pattern.repeat((total + 15) // 16)[:total]
    windows = stream.unfold(0, t + 1, t).reshape(total_steps, b, t + 1)
    return windows[..., :-1].contiguous(), windows[..., 1:].contiguous()


def train_steps(model, optimizer, backward, inputs, targets, warmup, steps, synchronize):
    """The timed loop on a model and optimizer already set up.

    Returns the measured steps' seconds and the last step's loss (a tensor,
    read by the caller after timing).
    """
    seconds = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs[step])
        # trainer.cc's Loss: the mean over every row (gpt: every token position).
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets[step].reshape(-1))
        # Not held through backward: Mantissa's trainer frees its logits here too,
        # and the peaks are compared.
        del logits
        backward(loss)
        optimizer.step()
        synchronize()
        if step >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds, loss.detach()


def g6(value):
    """%.6g, as the C++ benchmark prints its figures."""
    return float(f"{value:.6g}")


def run_one(args, fabric_cls, name, cfg, data, precision, mode, device):
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    torch.manual_seed(1)
    model = build_model(name, cfg).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    adamw = dict(ADAMW)
    if precision == "16-true" and args.fp16_true_eps > 0:
        # 1e-8 rounds to 0 in float16 and the loss turns NaN.
        adamw["eps"] = args.fp16_true_eps
    fused = mode == "tuned" and cuda
    compiled = mode == "tuned" and cuda and args.compile
    if fused:
        adamw["fused"] = True
    optimizer = torch.optim.AdamW(model.parameters(), **adamw)
    if compiled:
        model = torch.compile(model)
    if fabric_cls is None:
        backward = lambda loss: loss.backward()  # noqa: E731
    else:
        fabric = fabric_cls(accelerator=device.type, devices=[device.index] if cuda else 1,
                            precision=precision)
        model, optimizer = fabric.setup(model, optimizer)
        backward = fabric.backward
    synchronize = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    seconds, loss = train_steps(model, optimizer, backward, *data, args.warmup, args.steps,
                                synchronize)
    median = statistics.median(seconds)
    items_per_s = cfg["items_per_step"] / median
    peak = (torch.cuda.max_memory_allocated(device) - before) / MIB if cuda else None
    final_loss = loss.item()
    line = dict(
        workload=name, precision=precision, mode=mode, device=str(device),
        device_name=(torch.cuda.get_device_name(device) if cuda
                     else f"cpu ({torch.get_num_threads()} intra-op threads)"),
        torch=torch.__version__, lightning=args.lightning_version, scale=args.scale,
        batch=cfg["batch"], items_per_step=cfg["items_per_step"], item_unit=cfg["unit"],
        parameters=parameters, warmup=args.warmup, steps=args.steps,
        step_ms=g6(median * 1e3), step_ms_min=g6(min(seconds) * 1e3),
        step_ms_max=g6(max(seconds) * 1e3), items_per_s=g6(items_per_s),
        peak_alloc_mib=None if peak is None else g6(peak),
        tflops=g6(6.0 * parameters * items_per_s / 1e12),
        final_loss=g6(final_loss) if math.isfinite(final_loss) else None,
        adamw_eps=adamw["eps"], fused=fused, compiled=compiled)
    if not math.isfinite(final_loss):
        # Reported, not an error: Fabric trains on where Mantissa's trainer stops.
        line["nan_loss"] = True
    return line


def describe(name, cfg, scale):
    model = build_model(name, cfg)
    b = cfg["batch"]
    if name == "mlp":
        shapes = dict(inputs=[b, cfg["features"]], inputs_dtype="float32", targets=[b])
    else:
        t = cfg["seq_len"]
        shapes = dict(inputs=[b, t], inputs_dtype="int64", targets=[b, t])
    config = {k: v for k, v in cfg.items() if k not in ("batch", "items_per_step", "unit")}
    return dict(workload=name, scale=scale, batch=b, items_per_step=cfg["items_per_step"],
                item_unit=cfg["unit"], parameters=sum(p.numel() for p in model.parameters()),
                model=config, **shapes, targets_dtype="int64",
                parameter_shapes={n: list(p.shape) for n, p in model.named_parameters()})


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="mlp,gpt", help="comma-separated: mlp, gpt")
    p.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS), help="comma-separated")
    p.add_argument("--mode", default="both", choices=["default", "tuned", "both"])
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda[:N]")
    p.add_argument("--warmup", type=int, default=5, help="steps before the measured ones")
    p.add_argument("--steps", type=int, default=20, help="measured steps; step_ms is the median")
    p.add_argument("--scale", type=float, default=1.0, help="in (0, 1], as train_benchmark's")
    p.add_argument("--fp16-true-eps", type=float, default=1e-4,
                   help="AdamW eps for 16-true runs; 0 keeps 1e-8")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="tuned mode without torch.compile")
    p.add_argument("--describe", action="store_true",
                   help="print parameter counts and shapes only (no lightning needed)")
    p.add_argument("--no-fabric", action="store_true",
                   help="plain PyTorch, fp32 only, for checking the script without lightning")
    args = p.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.precisions = [q for q in args.precisions.split(",") if q]
    if not set(args.workloads) <= {"mlp", "gpt"}:
        p.error(f"--workloads: valid are mlp, gpt; got {','.join(args.workloads)}")
    if not 0 < args.scale <= 1:
        p.error(f"--scale must be in (0, 1], got {args.scale}")
    if args.warmup < 0 or args.steps < 1:
        p.error("--warmup must be >= 0 and --steps >= 1")
    if args.no_fabric and args.precisions != ["32-true"]:
        p.error("--no-fabric runs 32-true only: pass --precisions=32-true")
    return args


def resolve_device(flag):
    if flag == "auto":
        flag = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(flag)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(f"fabric_benchmark.py: --device={flag}: no CUDA device is available",
                  file=sys.stderr)
            sys.exit(2)
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None
                              else device.index)
        torch.cuda.set_device(device)
    return device


def main(argv):
    args = parse_args(argv)
    if args.describe:
        for name in args.workloads:
            print(json.dumps(describe(name, workload_config(name, args.scale), args.scale)),
                  flush=True)
        return 0
    fabric_cls, args.lightning_version = None, None
    if not args.no_fabric:
        try:
            import lightning
            from lightning.fabric import Fabric
        except ImportError as e:
            print(f"fabric_benchmark.py: the Python package 'lightning' is needed ({e}); "
                  "install it (pip install lightning), or use --describe", file=sys.stderr)
            return 2
        fabric_cls, args.lightning_version = Fabric, lightning.__version__
    device = resolve_device(args.device)
    modes = ["default", "tuned"] if args.mode == "both" else [args.mode]
    failures = 0
    for name in args.workloads:
        cfg = workload_config(name, args.scale)
        data = make_data(name, cfg, args.warmup + args.steps, device)
        for precision in args.precisions:
            for mode in modes:
                try:
                    line = run_one(args, fabric_cls, name, cfg, data, precision, mode, device)
                except Exception as e:  # noqa: BLE001 - one failed run must not stop the rest
                    failures += 1
                    line = dict(workload=name, precision=precision, mode=mode,
                                device=str(device), error=f"{type(e).__name__}: {e}")
                print(json.dumps(line), flush=True)
                # Nothing of this run may stay resident in the next one's peak.
                if mode == "tuned" and hasattr(torch, "compiler"):
                    torch.compiler.reset()
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        del data
        gc.collect()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
