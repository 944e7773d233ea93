"""Benchmark: memory of a drawing-app kernel and time from page load to a usable canvas.

Serves the app with Voila (preheated kernel pool, as ``mnist-hitl app`` does) from a
temporary home holding a copy of the deployed model (or a freshly trained one),
loads the page in headless Chromium several times, draws a digit and predicts it
on the first load, and reads the serving kernel's memory from /proc (psutil).
"Usable canvas" is the moment the kernel has set the canvas up for this page (it
then carries the ``hitl-ready`` class), measured from navigation start. The first
load has a cold browser cache; later loads reuse it. Each load waits for the kernel
pool to refill first, so every page gets a warm, preheated kernel. Prints figures
(goals: <= 120 MB RSS per kernel, <= 2.5 s warm); asserts nothing.

    .venv/bin/python bench/app_kernel.py [--home DIR] [--loads 5]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import psutil
from support import CHROMIUM, CHROMIUM_ARGS, deployed_models, home_with_model, machine, report

SEVEN = [(60, 50), (220, 50), (150, 250)]
KERNEL_ID = re.compile(r"/api/kernels/([0-9a-f-]{36})")


def kernels(server: subprocess.Popen) -> dict[str, psutil.Process]:
    """The server's kernel processes by kernel id."""
    found = {}
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            match = re.search(r"kernel-([0-9a-f-]{36})\.json", " ".join(child.cmdline()))
        except psutil.Error:
            continue
        if match:
            found[match.group(1)] = child
    return found


def wait_until_quiet(server: subprocess.Popen, pool_size: int, timeout: float = 60.0) -> None:
    """Wait until the pool is refilled and the server and its kernels stop using the CPU."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes = [psutil.Process(server.pid), *kernels(server).values()]
        for process in processes:
            process.cpu_percent(None)
        time.sleep(1.0)
        busy = sum(process.cpu_percent(None) for process in processes if process.is_running())
        if len(processes) - 1 >= pool_size and busy < 5.0:
            return


def memory(process: psutil.Process) -> dict[str, float]:
    info = process.memory_full_info()
    return {"rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20, "pss_mb": getattr(info, "pss", 0) / 2**20}


def draw(page, points, steps: int = 10) -> None:
    box = page.locator(".hitl-canvas").bounding_box()
    x, y = points[0]
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.mouse.down()
    for nx, ny in points[1:]:
        page.mouse.move(box["x"] + nx, box["y"] + ny, steps=steps)
    page.mouse.up()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home whose deployed model is used (default: MNIST_HITL_HOME)")
    parser.add_argument("--loads", type=int, default=5, help="page loads to time")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from mnist_hitl.app.command import running_app
    from mnist_hitl.config import get_settings

    pool_size = 2
    home = home_with_model(deployed_models(args.home), prefix="mnist-hitl-bench-app-")
    load_times, attach_times = [], []
    started = time.perf_counter()
    try:
        with running_app(get_settings(), pool_size=pool_size, log=home / "voila.log") as app:
            figures: dict[str, object] = {"voila_ready_with_pool_s": time.perf_counter() - started}
            server, url = app.process, app.url
            wait_until_quiet(server, pool_size)
            idle = [memory(process) for process in kernels(server).values()]
            figures["idle_preheated_kernel_rss_mb"] = max(m["rss_mb"] for m in idle)
            figures["idle_preheated_kernel_uss_mb"] = max(m["uss_mb"] for m in idle)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1100, "height": 1000})
                for load in range(args.loads):
                    page = context.new_page()
                    page.goto(url, wait_until="commit")
                    page.wait_for_selector(".hitl-canvas", state="attached", timeout=120_000)
                    attach_times.append(page.evaluate("performance.now()") / 1000)
                    page.wait_for_selector(".hitl-canvas.hitl-ready", timeout=120_000)
                    load_times.append(page.evaluate("performance.now()") / 1000)
                    if load == 0:
                        draw(page, SEVEN)
                        start = time.perf_counter()
                        page.click(".hitl-predict")
                        page.wait_for_selector(".hitl-status [data-prediction-id]", timeout=60_000)
                        figures["predict_click_to_answer_ms"] = (time.perf_counter() - start) * 1000
                        figures["predicted_label"] = page.eval_on_selector(
                            ".hitl-prediction [data-label]", "el => el.dataset.label"
                        )
                        resources = page.evaluate("performance.getEntriesByType('resource').map(r => r.name)")
                        ids = {m.group(1) for name in resources if (m := KERNEL_ID.search(name))}
                        running = kernels(server)
                        used = [running[i] for i in ids if i in running]
                        if used:
                            after = memory(used[0])
                            figures["kernel_after_first_prediction_rss_mb"] = after["rss_mb"]
                            figures["kernel_after_first_prediction_uss_mb"] = after["uss_mb"]
                            figures["kernel_after_first_prediction_pss_mb"] = after["pss_mb"]
                        else:
                            print("warning: could not tell which kernel served the page")
                    page.close()
                    wait_until_quiet(server, pool_size)
                browser.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)

    figures["page_load_to_usable_canvas_s"] = [round(t, 3) for t in load_times]
    figures["page_load_to_canvas_shown_s"] = [round(t, 3) for t in attach_times]
    figures["first_load_cold_browser_cache_s"] = load_times[0]
    if len(load_times) > 1:
        figures["warm_load_median_s"] = statistics.median(load_times[1:])
        figures["warm_load_max_s"] = max(load_times[1:])
    report("app_kernel", {**figures, **machine()}, decimals=3)


if __name__ == "__main__":
    main()
