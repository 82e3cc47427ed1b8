"""Two ways around `cifarnet evaluate`'s CPU ceiling, measured against its own loop.

`evaluate` runs one stream of batches with every core working on each batch (PyTorch's
intra-op threads, eager bf16 with BatchNorm folded and each convolution fused with the ReLU or
residual addition after it). This script times, over the test images of CKPT's dataset and in
alternating rounds:

- `eager`: that loop (cifarnet.training.step.evaluate on the evaluate model, as `evaluate` runs it);
- `streams`: one single-thread stream per core (Python threads, each with one intra-op thread,
  taking every n-th batch), as OpenVINO's throughput mode does;
- `compiled`: the model with BatchNorm folded but its convolutions left unfused, through
  `torch.compile` with Inductor's freezing (weights as constants, which lets Inductor prepack
  them and fuse element-wise operations into the convolutions itself); its compile time is
  reported apart.

    python scripts/evaluate_variants.py runs/train/best.pt --data-dir DATA [--rounds 3]

Prints one JSON line per round, then a summary line: images/s per variant, the compile seconds,
and how far the compiled logits are from eager's (max |delta| and top-1 agreement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

from cifarnet.data.datasets import load_dataset
from cifarnet.data.loader import BatchLoader
from cifarnet.tasks.inference import LoadedModel, load_inference_model
from cifarnet.training.step import EvalResult, evaluate


def images_per_second(run) -> float:
    """Images/s of one call of run(), which returns the EvalResult of the images it ran."""
    start = time.perf_counter()
    count = run().count
    return count / (time.perf_counter() - start)


def against(result: EvalResult, reference: EvalResult) -> dict[str, float]:
    """Max |delta logit| and top-1 agreement of `result` against `reference` (same images)."""
    assert result.logits is not None and reference.logits is not None  # keep_logits=True
    return {
        "max_abs_logit_delta": (result.logits - reference.logits).abs().max().item(),
        "top1_agreement": (
            (result.logits.argmax(1) == reference.logits.argmax(1)).float().mean().item()
        ),
    }


def in_streams(loaded: LoadedModel, batches: list, streams: int) -> EvalResult:
    """Evaluate with `streams` single-thread workers, worker i taking batches i, i+streams, ..."""
    parts: list[EvalResult | None] = [None] * streams

    def worker(i: int) -> None:
        torch.set_num_threads(1)  # per thread: the OpenMP team size of this thread only
        parts[i] = evaluate(loaded.module, batches[i::streams], loaded.runtime, keep_logits=True)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [p for p in parts if p is not None]
    if len(done) < streams:  # a worker raised: its traceback is printed above
        raise RuntimeError("a stream failed; its rate would cover only part of the images")
    count = sum(p.count for p in done)
    return EvalResult(
        loss=sum(p.loss * p.count for p in done) / count,
        top1=sum(p.top1 * p.count for p in done) / count,
        top5=sum(p.top5 * p.count for p in done) / count,
        count=count,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=1000)  # evaluate's default
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    loaded = load_inference_model(args.checkpoint, "auto", "auto")
    data = load_dataset(loaded.info.dataset, args.data_dir, download=False)
    device = loaded.runtime.device
    loader = BatchLoader(
        data.test_images.to(device), data.test_labels.to(device), args.batch_size, loaded.input
    )
    batches = list(loader.batches())  # (x float (B, 3, 32, 32), y (B,)), made once
    cores = torch.get_num_threads()

    def eager() -> EvalResult:
        return evaluate(loaded.module, batches, loaded.runtime, keep_logits=True)

    inductor_config.freezing = True
    unfused = load_inference_model(args.checkpoint, "auto", "auto", fuse=False)
    compiled_module = torch.compile(unfused.module)

    def compiled() -> EvalResult:
        return evaluate(compiled_module, batches, loaded.runtime, keep_logits=True)

    start = time.perf_counter()
    compiled()  # the first call compiles
    compile_seconds = time.perf_counter() - start

    rates: dict[str, list[float]] = {"eager": [], "streams": [], "compiled": []}
    for r in range(args.rounds):
        rates["eager"].append(images_per_second(eager))
        rates["streams"].append(images_per_second(lambda: in_streams(loaded, batches, cores)))
        torch.set_num_threads(cores)  # the main thread's team, untouched by the workers
        rates["compiled"].append(images_per_second(compiled))
        print(json.dumps({"round": r + 1, **{k: round(v[-1], 1) for k, v in rates.items()}}))

    reference, fast = eager(), compiled()
    print(
        json.dumps(
            {
                "images": reference.count,
                "batch_size": args.batch_size,
                "threads": cores,
                "median_images_per_second": {
                    k: round(statistics.median(v), 1) for k, v in rates.items()
                },
                "compile_seconds": round(compile_seconds, 1),
                **{f"compiled_{k}": v for k, v in against(fast, reference).items()},
                "top1": {"eager": reference.top1, "compiled": fast.top1},
            }
        )
    )


if __name__ == "__main__":
    main()
