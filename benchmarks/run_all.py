"""Run every benchmark, side by side in one session, and print one table of ratios against targets.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...]

Each benchmark is its own script (runnable alone) that writes `benchmarks/out/<name>.json` with a
`checks` list of {"name", "value", "target", "ok"}; this entry point runs them in turn on the same
machine, then gathers the checks. Figures go into benchmarks/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
# peer: against open_clip_train / clip_benchmark (skipped, with the install line, when they are missing)
BENCHES = ["loader", "embed", "balance", "distill", "eval", "flops", "attn", "td", "profile", "peer"]


def machine() -> str:
    import os

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return f"{platform.node()} | {cpu} | {os.cpu_count()} cores | python {platform.python_version()}"


def run_one(name: str, quick: bool) -> dict:
    script = HERE / f"bench_{name}.py"
    if not script.is_file():
        return {"name": name, "error": f"{script.name} missing"}
    cmd = [sys.executable, str(script), "--out", str(OUT / f"{name}.json")] + (["--quick"] if quick else [])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    result = {"name": name, "seconds": round(time.perf_counter() - t, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        result["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        return result
    result.update(json.loads((OUT / f"{name}.json").read_text()))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the recorded figures)")
    ap.add_argument("--only", nargs="*", default=None, choices=BENCHES)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = [run_one(n, args.quick) for n in (args.only or BENCHES)]
    print(f"machine: {machine()}")
    print(f"{'benchmark':<10} {'check':<48} {'value':>10} {'target':>12} ok")
    for r in results:
        if "error" in r:
            print(f"{r['name']:<10} ERROR: {r['error']}")
            continue
        for peer, why in r.get("skipped", {}).items():  # bench_peer: a peer toolkit that is not installed
            print(f"{r['name']:<10} SKIPPED {peer}: {why}")
        for c in r.get("checks", []):
            ok = "-" if c["ok"] is None else ("yes" if c["ok"] else "NO")  # None: a figure with no target
            print(f"{r['name']:<10} {c['name']:<48} {c['value']:>10.3g} {c['target']:>12} {ok}")
    (OUT / "all.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
