"""The fast loop's footing: ONNX Runtime against hf_midi's own GPT-2 step, one CPU thread, side by side.

    pip install onnxruntime onnx onnxscript        # in an environment with torch and transformers 5.x
    python benchmarks/bench_ort.py hf_midi/pretrained/small [--tokens 256]

optimum's exporter (optimum-onnx 0.1.0) cannot be installed beside transformers 5.24 (pip: resolution
impossible), so the model's one-token step with an explicit key/value cache is exported here with
``torch.onnx.export`` (float32), and quantised to int8 with ``onnxruntime.quantization.quantize_dynamic``.
Each arm samples ``--tokens`` tokens from <bos> in the same bare loop (softmax + multinomial, no music
processors): plain ``generate()``, ORT float32 / int8, and ``FastGPT2`` (hf_midi/remote_code/fast_generation.py,
loaded from its file) in float32 / float16 / int8. Two rounds; the last line is one JSON object.
"""
import argparse
import importlib.util
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
BOS = 391


class Step(torch.nn.Module):
    """One GPT-2 step over an explicit cache ``past`` (layers, 2, 1, heads, T, head_dim)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        cfg = model.config
        self.heads, self.width = cfg.n_head, cfg.n_embd

    def forward(self, ids, pos, past):
        tr, heads, width = self.model.transformer, self.heads, self.width
        x = tr.wte(ids) + tr.wpe(pos)
        present = []
        for i, block in enumerate(tr.h):
            qkv = block.attn.c_attn(block.ln_1(x)).view(1, -1, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            k = torch.cat([past[i, 0], qkv[1]], 2)
            v = torch.cat([past[i, 1], qkv[2]], 2)
            present.append(torch.stack([k, v]))
            a = F.scaled_dot_product_attention(qkv[0], k, v)
            x = x + block.attn.c_proj(a.transpose(1, 2).reshape(1, -1, width))
            x = x + block.mlp(block.ln_2(x))
        return self.model.lm_head(tr.ln_f(x[:, -1])), torch.stack(present)


def session(path: str):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    n = args.tokens
    model = AutoModelForCausalLM.from_pretrained(args.model).float().eval()
    cfg = model.config
    layers, heads, head_dim = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
    tmp = Path(tempfile.mkdtemp())
    path, path8 = str(tmp / "step.onnx"), str(tmp / "step_int8.onnx")
    torch.onnx.export(Step(model).eval(), (torch.tensor([[BOS]]), torch.tensor([[3]]),
                                           torch.zeros(layers, 2, 1, heads, 3, head_dim)),
                      path, input_names=["ids", "pos", "past"], output_names=["logits", "present"],
                      dynamic_axes={"past": {4: "T"}, "present": {4: "T1"}}, dynamo=False, opset_version=17)
    quantize_dynamic(path, path8, weight_type=QuantType.QInt8)
    spec = importlib.util.spec_from_file_location("fast_generation", ROOT / "hf_midi" / "fast_generation.py")
    fast = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fast)

    def run_ort(sess) -> float:
        past, tok = np.zeros((layers, 2, 1, heads, 0, head_dim), np.float32), BOS
        t = time.perf_counter()
        for i in range(n):
            logits, past = sess.run(None, {"ids": np.array([[tok]]), "pos": np.array([[i]]), "past": past})
            tok = int(torch.multinomial(torch.softmax(torch.from_numpy(logits[0, :393]), -1), 1))
        return n / (time.perf_counter() - t)

    def run_generate() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(torch.tensor([[BOS]]), do_sample=True, max_new_tokens=n, min_new_tokens=n, pad_token_id=390)
        return n / (time.perf_counter() - t)

    def run_fast(fmt: str) -> float:
        decoder = fast.FastGPT2(model, fmt)
        decoder.start(1, n + 1)
        tok = torch.tensor([[BOS]])
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in range(n):
                tok = torch.multinomial(torch.softmax(decoder.step(tok)[:, :393], -1), 1)
        return n / (time.perf_counter() - t)

    s32, s8 = session(path), session(path8)
    arms = {"generate": run_generate, "ort/float32": lambda: run_ort(s32), "ort/int8": lambda: run_ort(s8),
            "fast/float32": lambda: run_fast("float32"), "fast/float16": lambda: run_fast("float16"),
            "fast/int8": lambda: run_fast("int8")}
    best: dict[str, float] = {}
    for r in range(2):
        for name, fn in arms.items():
            best[name] = max(best.get(name, 0.0), fn())
        print(f"round {r}: " + "  ".join(f"{k} {v:.1f}" for k, v in best.items()) + " events/s (best so far)",
              flush=True)
    print(json.dumps({
        "bench": "ort", "model": args.model, "tokens": n,
        "events_per_s": {k: round(v, 1) for k, v in best.items()},
        "fast_over_ort": {f: round(best[f"fast/{f}"] / best[f"ort/{f}"], 3) for f in ("float32", "int8")},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
    }))


if __name__ == "__main__":
    main()
