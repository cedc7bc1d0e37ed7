"""The local engine beside llama.cpp's reference, on the same GGUF, the same
prompt and the same machine, in one run. Run it through
bench/engine-vs-llamacpp.sh, which builds both sides.

For each model:
  1. `agent run --dry-run --json GOAL` renders the first step's messages.
  2. agent (`agent bench model --messages`, a fresh process) runs two
     constrained ReAct steps and a free generation, first with no saved
     prompt-prefix state (a cold first run), then again (a later run, which
     finds the state the first one saved).
  3. llama-cpp-python, in a fresh process, runs the same two prompts (the
     same messages, step 2 carrying agent's step-1 output and observation),
     generating as many tokens as agent did (unconstrained, end-of-text
     banned: no grammar cost on its side), and the same free generation.
  4. The ratios agent / llama.cpp are printed (lower is better; the targets
     are first step <= 1.5, later steps <= 1.3, decode >= 0.8 as a speed
     ratio).

Usage (inside the peer's virtual environment):
  python engine_vs_llamacpp.py --agent PATH [--model NAME ...] [--goal TEXT]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def peer(gguf, steps_file, out_file, threads, ctx, free_tokens):
    """One fresh llama-cpp-python process: load, the steps, the story."""
    from llama_cpp import Llama

    steps = json.load(open(steps_file))
    t = time.perf_counter()
    llm = Llama(model_path=gguf, n_ctx=ctx, n_threads=threads, n_threads_batch=threads,
                n_batch=512, verbose=False)
    load_s = time.perf_counter() - t
    eos = llm.token_eos()
    ban = {eos: -1e9}
    report = {"load_s": load_s, "steps": []}
    for step in steps:
        t = time.perf_counter()
        r = llm.create_chat_completion(messages=step["messages"], max_tokens=max(step["tokens"], 1),
                                       temperature=0.0, logit_bias=ban)
        report["steps"].append({"secs": time.perf_counter() - t,
                                "prompt_tokens": r["usage"]["prompt_tokens"],
                                "completion_tokens": r["usage"]["completion_tokens"]})
    t = time.perf_counter()
    first = None
    n = 0
    for chunk in llm.create_chat_completion(messages=STORY, max_tokens=free_tokens, temperature=0.0,
                                            logit_bias=ban, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            n += 1
            if first is None:
                first = time.perf_counter() - t
    total = time.perf_counter() - t
    # Streamed chunks are tokens here (one delta per token).
    report["free"] = {"secs": total, "first_token_s": first or total, "completion_tokens": n,
                      "decode_tps": max(n - 1, 0) / max(total - (first or total), 1e-6)}
    json.dump(report, open(out_file, "w"))


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent")
    ap.add_argument("--model", action="append")
    ap.add_argument("--goal", default="Write a haiku about the sea to haiku.txt, then read it back")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--free-tokens", type=int, default=100)
    ap.add_argument("--peer", nargs=3, metavar=("GGUF", "STEPS", "OUT"))
    ap.add_argument("--ctx", type=int, default=8192)
    args = ap.parse_args()
    if args.peer:
        peer(*args.peer, args.threads, args.ctx, args.free_tokens)
        return
    if not args.agent:
        sys.exit("--agent PATH is needed (bench/engine-vs-llamacpp.sh passes it)")
    models = args.model or ["smollm2-135m", "qwen2.5-coder-1.5b"]
    agent = args.agent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            run([agent, "model", "pull", model])
            info = json.loads(run([agent, "model", "info", model, "--json"]))
            gguf = info["path"]
            dry = run([agent, "run", "--dry-run", "--json", "--model", model, args.goal])
            msgs = os.path.join(tmp, f"{model}.json")
            open(msgs, "w").write(dry)
            # A cache of our own for the prefix states, sharing the models.
            cache = os.path.join(tmp, f"cache-{model}")
            os.makedirs(cache, exist_ok=True)
            models_dir = os.path.dirname(os.path.dirname(os.path.dirname(gguf)))
            if not os.path.exists(os.path.join(cache, "models")):
                os.symlink(models_dir, os.path.join(cache, "models"))
            env = dict(os.environ, AGENT_CACHE_DIR=cache)
            bench = [agent, "bench", "model", "--model", model, "--messages", msgs, "--steps", "2",
                     "--free-tokens", str(args.free_tokens), "--json"]
            cold = json.loads(run(bench, env))
            warm = json.loads(run(bench, env))
            steps = [{"messages": s["messages"], "tokens": s["completion_tokens"]} for s in warm["steps"]]
            steps_file = os.path.join(tmp, f"{model}-steps.json")
            json.dump(steps, open(steps_file, "w"))
            out = os.path.join(tmp, f"{model}-peer.json")
            run([sys.executable, __file__, "--threads", str(args.threads), "--ctx", str(args.ctx),
                 "--free-tokens", str(args.free_tokens), "--peer", gguf, steps_file, out])
            ref = json.load(open(out))
            rows.append((model, cold, warm, ref))

    def ratio(a, b):
        return a / b if b > 0 else float("nan")

    print(f"machine: {os.cpu_count()} CPUs, {args.threads} threads; goal: {args.goal!r}")
    print("| model | prompt tokens | llama.cpp step 1 / step 2 | agent step 1 cold / warm / step 2 "
          "| ratio step 1 cold / warm / step 2 | decode tok/s llama.cpp / agent (ratio) |")
    print("|---|---|---|---|---|---|")
    for model, cold, warm, ref in rows:
        r1, r2 = ref["steps"][0]["secs"], ref["steps"][1]["secs"]
        a1c, a1w, a2 = cold["steps"][0]["secs"], warm["steps"][0]["secs"], warm["steps"][1]["secs"]
        d_ref, d_us = ref["free"]["decode_tps"], warm["free"]["decode_tps"]
        print(f"| {model} | {warm['steps'][0]['prompt_tokens']} (llama.cpp {ref['steps'][0]['prompt_tokens']}) "
              f"| {r1:.2f} s / {r2:.2f} s | {a1c:.2f} s / {a1w:.2f} s / {a2:.2f} s "
              f"| {ratio(a1c, r1):.2f}x / {ratio(a1w, r1):.2f}x / {ratio(a2, r2):.2f}x "
              f"| {d_ref:.1f} / {d_us:.1f} ({ratio(d_us, d_ref):.2f}) |")
    print("load: " + ", ".join(f"{m} llama.cpp {r['load_s']:.2f} s, agent {w['load_s']:.2f} s"
                               for m, _, w, r in rows))


if __name__ == "__main__":
    main()
