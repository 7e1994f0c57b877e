"""Space: time from clicking Generate to the first sound and to the whole piece, 20 s of music, one variation.

    python benchmarks/bench_space.py [--model DIR] [--runs 5] [--seconds 20]

Drives the real page in Debian Chromium (Playwright) against the app on localhost, one torch
thread. The first sound: the page plays one variation while it composes (Web Audio); the time from
the click handler to the moment the first scheduled chunk starts sounding, both read from the
browser's clock (``window.hfMidiLive``). The whole piece: until the browser has decoded the finished
WAV in the variation's player. Also times the server's parts directly
(generate, render + package). Model: ``--model``, else the bundled one, else a random-init
``default`` preset (the shipped model's size; its music is noise and much sparser in tokens than a
trained model's, so the figures add the time to generate as many tokens as POP909 holds in that
many seconds, and an estimate of click to audio at that density). The direct runs also time the
pipeline's slow path (``fast=False``: generate()'s own loop) on the same seeds, side by side. Goal:
<= 3 s (the generation-speed issue's). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]


def load_app():
    spec = importlib.util.spec_from_file_location("hf_midi_space_app", ROOT / "spaces_app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def model_folder(given: str | None, tmp: Path) -> tuple[str, str]:
    """(folder, what it is)."""
    from hf_midi.loading import default_model_path

    if given:
        return given, f"given: {given}"
    if default_model_path() is not None:
        return str(default_model_path()), "bundled hf_midi/pretrained/default"
    import torch

    from hf_midi import MidiTokenizer
    from hf_midi.remote_code.codec import EOS_ID
    from hf_midi.training import build_model, generation_config

    torch.manual_seed(0)
    model = build_model("small-stream")
    model.generation_config = generation_config(model.config)
    # A random model ends the piece (<eos>) within a few tokens; a trained one plays on for 20 s.
    model.generation_config.suppress_tokens = [*model.generation_config.suppress_tokens, EOS_ID]
    model.save_pretrained(tmp)
    MidiTokenizer().save_pretrained(tmp)
    return str(tmp), "random-init 'small-stream' preset (no bundled model yet)"


def pop909_tokens_per_second() -> float:
    from hf_midi.remote_code.codec import encode, load_score, score_to_performance

    files = sorted((ROOT / "tests" / "fixtures" / "pop909").glob("*.mid"))
    tokens = sum(len(encode(f)) for f in files)
    seconds = sum(score_to_performance(load_score(f)).duration for f in files)
    return tokens / seconds


# The player's <audio> with a source; the waveform keeps it inside a shadow root.
FIND_AUDIO = """function find(root) {
    if (!root) return null;
    for (const el of root.querySelectorAll('*')) {
        if (el.tagName === 'AUDIO' && el.src) return el;
        const inner = el.shadowRoot && find(el.shadowRoot);
        if (inner) return inner;
    }
    return null;
}"""


def click_to_audio(page, seconds: float, seed: int) -> tuple[float, float, int]:
    """Set the form, click Generate; (click to first sound, click to the whole piece's decoded audio,
    live chunks played)."""
    for elem_id, value in (("seconds", seconds), ("variations", 1)):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    if not page.locator("#seed input").is_visible():
        page.get_by_text("Sampling").click()  # open the accordion
    page.locator("#new-seed input").uncheck()
    page.locator("#seed input").fill(str(seed))
    page.locator("#seed input").press("Enter")
    old = page.evaluate(f"() => ({FIND_AUDIO})(document.querySelector('#audio-1'))?.src ?? ''")
    start = time.perf_counter()
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(
        f"""old => {{ const a = ({FIND_AUDIO})(document.querySelector('#audio-1'));
                     return a && a.src != old && a.duration > 0 && isFinite(a.duration); }}""",
        arg=old, polling=50,
    )
    whole = time.perf_counter() - start
    live = page.evaluate("() => [hfMidiLive.firstSoundAt - hfMidiLive.clickedAt, hfMidiLive.chunks]")
    return live[0] / 1000, whole, live[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    import gradio
    import torch
    import transformers
    from playwright.sync_api import sync_playwright

    torch.set_num_threads(1)
    app = load_app()
    with tempfile.TemporaryDirectory() as tmp:
        folder, what = model_folder(args.model, Path(tmp))
        pipe = app.load_pipeline(folder)
        params = sum(p.numel() for p in pipe.model.parameters())

        # The server's parts, called directly (the first call also pays one-time costs).
        parts = []
        for run in range(args.runs):
            settings = app.make_settings(seconds=args.seconds, seed=1000 + run)
            t0 = time.perf_counter()
            [result] = app.generate(pipe, settings)
            t1 = time.perf_counter()
            app.package(result, Path(tmp) / "out", f"run{run}")
            t2 = time.perf_counter()
            t3 = time.perf_counter()
            [slow] = pipe(seconds=settings.seconds, temperature=settings.temperature, top_p=settings.top_p,
                          top_k=settings.top_k, seed=settings.seed, fast=False,
                          progress=lambda done, total: None)  # as the app reports progress
            t4 = time.perf_counter()
            parts.append({"generate_s": t1 - t0, "render_s": t2 - t1, "tokens": len(result["token_ids"]),
                          "music_s": result["seconds"], "slow_generate_s": t4 - t3,
                          "same_tokens": slow["token_ids"] == result["token_ids"]})
            print(f"direct run {run}: generate {t1 - t0:.2f} s ({len(result['token_ids'])} tokens; slow path "
                  f"{t4 - t3:.2f} s), render+package {t2 - t1:.2f} s", file=sys.stderr)

        # What a trained model costs: it writes about POP909's number of tokens per second of music.
        pop_density = pop909_tokens_per_second()
        dense_tokens = round(args.seconds * pop_density)
        t0 = time.perf_counter()
        pipe(max_new_tokens=dense_tokens, seed=7)
        dense_s = time.perf_counter() - t0

        demo = app.build_demo(pipe=pipe)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
        clicks, firsts, chunks = [], [], []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.set_default_timeout(300_000)
                page.goto(f"http://127.0.0.1:{port}/")
                for run in range(args.runs):
                    first, whole, n = click_to_audio(page, args.seconds, 2000 + run)
                    firsts.append(first)
                    clicks.append(whole)
                    chunks.append(n)
                    print(f"browser run {run}: click to first sound {first:.2f} s, to the whole piece {whole:.2f} s "
                          f"({n} live chunks)", file=sys.stderr)
                browser.close()
        finally:
            demo.close()

    made_density = statistics.median(r["tokens"] / r["music_s"] for r in parts)
    overhead = statistics.median(clicks) - statistics.median(r["generate_s"] for r in parts)
    figures = {
        "bench": "space",
        "seconds_of_music": args.seconds,
        "variations": 1,
        "model": what,
        "parameters": params,
        "runs": args.runs,
        "click_to_first_sound_s": [round(c, 3) for c in firsts],
        "click_to_first_sound_median_s": round(statistics.median(firsts), 3),
        "first_sound_goal_s": 1.0,
        "first_sound_met": statistics.median(firsts) <= 1.0,
        "live_chunks": chunks,
        "click_to_whole_piece_s": [round(c, 2) for c in clicks],
        "click_to_whole_piece_median_s": round(statistics.median(clicks), 2),
        "whole_piece_over_first_sound": round(statistics.median(clicks) / statistics.median(firsts), 1),
        "generate_s": [round(r["generate_s"], 2) for r in parts],
        "slow_path_generate_s": [round(r["slow_generate_s"], 2) for r in parts],
        "fast_over_slow_generate": round(statistics.median(r["slow_generate_s"] for r in parts)
                                         / statistics.median(r["generate_s"] for r in parts), 2),
        "same_tokens_as_slow_path": [r["same_tokens"] for r in parts],
        "render_package_s": [round(r["render_s"], 3) for r in parts],
        "tokens_per_music_second_generated": round(made_density, 1),
        "tokens_per_music_second_pop909": round(pop_density, 1),
        "pop909_density_tokens": dense_tokens,
        "pop909_density_generate_s": round(dense_s, 2),
        "pop909_density_tokens_per_s": round(dense_tokens / dense_s, 1),
        # the page's overhead (click to audio minus generate) plus generating that many tokens
        "estimated_click_to_audio_at_pop909_density_s": round(overhead + dense_s, 2),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "gradio": gradio.__version__},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
