#!/usr/bin/env python3
"""Local model speed: linepilot (candle) against llama.cpp on the same GGUF file, same run.

For each model and thread count, both engines get the same prompt token ids (made by
llama.cpp's tokenizer from the same text) and generate the same number of greedy
tokens; each engine runs in a fresh process so its peak RSS is its own.

    python3 benches/llm_vs_llamacpp.py --linepilot target/release/linepilot \
        [--models smollm2-135m,qwen2.5-0.5b] [--threads 1,2] [--prompt 300] [--generate 64]

Needs `pip install llama-cpp-python` (it builds llama.cpp from source) and the models
pulled with `linepilot model pull NAME`. Prints a Markdown table for docs/BENCHMARKS.md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

FILES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-0.5b": "Qwen2.5-0.5B-Instruct.Q5_0.gguf",
}
TEXT = ("The filler on line 1 stopped at 10:40 because the bowl pressure fell below 2.5 bar. "
        "The capper's torque rose to 3.1 Nm while the labeller waited for bottles. ")


def model_dir():
    if os.environ.get("LINEPILOT_MODEL_DIR"):
        return os.environ["LINEPILOT_MODEL_DIR"]
    if os.environ.get("XDG_DATA_HOME"):
        return os.path.join(os.environ["XDG_DATA_HOME"], "linepilot/models")
    return os.path.expanduser("~/.local/share/linepilot/models")


def child_llamacpp(path, threads, ids_file, generate, out):
    """Runs in a child process: llama.cpp's numbers."""
    from llama_cpp import Llama
    ids = [int(w) for w in open(ids_file).read().split()]
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                n_batch=512, verbose=False)
    llm.eval(ids[:16])  # warm-up
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    prompt_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(generate):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    gen_s = time.perf_counter() - t
    json.dump({"prompt_tps": len(ids) / prompt_s, "generation_tps": generate / gen_s}, open(out, "w"))


def measure_llamacpp(path, threads, ids_file, generate):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    pid = os.fork()
    if pid == 0:
        try:
            child_llamacpp(path, threads, ids_file, generate, out)
            os._exit(0)
        except Exception as e:  # noqa: BLE001
            print(f"llama.cpp child failed: {e}", file=sys.stderr)
            os._exit(1)
    _, status, ru = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit("llama.cpp run failed")
    r = json.load(open(out))
    r["peak_rss_mb"] = ru.ru_maxrss / 1024.0
    return r


def measure_linepilot(exe, name, mdir, threads, ids_file, generate, keep_types=False):
    p = subprocess.Popen([exe, "model", "bench", "--model", name, "--dir", mdir, "--threads", str(threads),
                          "--prompt-ids", ids_file, "--generate", str(generate)]
                         + (["--keep-types"] if keep_types else []), stdout=subprocess.PIPE)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"linepilot model bench failed for {name}")
    r = json.loads(out)
    r["peak_rss_mb_os"] = ru.ru_maxrss / 1024.0
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--linepilot", default="target/release/linepilot")
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-0.5b")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt", type=int, default=300)
    ap.add_argument("--generate", type=int, default=64)
    a = ap.parse_args()
    from llama_cpp import Llama
    mdir = model_dir()
    rows = []
    accuracy = []
    for name in a.models.split(","):
        path = os.path.join(mdir, FILES[name])
        tok = Llama(model_path=path, vocab_only=True, verbose=False)
        ids = tok.tokenize((TEXT * 40).encode(), add_bos=False, special=False)[: a.prompt]
        del tok
        with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as f:
            f.write(" ".join(map(str, ids)))
            ids_file = f.name
        for th in [int(t) for t in a.threads.split(",")]:
            ours = measure_linepilot(a.linepilot, name, mdir, th, ids_file, a.generate)
            peer = measure_llamacpp(path, th, ids_file, a.generate)
            rows.append((name, th, ours, peer))
            print(json.dumps({"model": name, "threads": th, "linepilot": ours, "llama.cpp": peer}), file=sys.stderr)
        keep = measure_linepilot(a.linepilot, name, mdir, 1, ids_file, a.generate, keep_types=True)
        one = [r[2] for r in rows if r[0] == name and r[1] == 1] or [rows[-1][2]]
        accuracy.append((name, keep, one[0]))
    sys.stdout.flush()
    print(f"prompt {a.prompt} tokens, {a.generate} generated, greedy; each engine in a fresh process\n")
    print("| model | threads | linepilot prompt tok/s | llama.cpp prompt tok/s | ratio | linepilot gen tok/s | "
          "llama.cpp gen tok/s | ratio | linepilot TTFT, 500-token cached prefix | peak RSS linepilot / llama.cpp |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, th, o, p in rows:
        print(f"| {name} | {th} | {o['prompt_tps']:.0f} | {p['prompt_tps']:.0f} | {o['prompt_tps'] / p['prompt_tps']:.2f}× | "
              f"{o['generation_tps']:.1f} | {p['generation_tps']:.1f} | {o['generation_tps'] / p['generation_tps']:.2f}× | "
              f"{o['ttft_cached_ms']:.0f} ms (cold {o['ttft_cold_ms']:.0f} ms) | "
              f"{o['peak_rss_mb_os']:.0f} / {p['peak_rss_mb']:.0f} MB |")
    print("\nThe file's own types on candle's kernels against int8 on ours (1 thread): speed and accuracy\n")
    print("| model | file types: gen tok/s | int8: gen tok/s | file types: perplexity | int8: perplexity | peak RSS file types / int8 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, k, q in accuracy:
        print(f"| {name} | {k['generation_tps']:.1f} | {q['generation_tps']:.1f} | {k['perplexity']:.3f} | "
              f"{q['perplexity']:.3f} | {k['peak_rss_mb_os']:.0f} / {q['peak_rss_mb_os']:.0f} MB |")


if __name__ == "__main__":
    main()
