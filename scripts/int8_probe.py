"""What int8 would buy `cifarnet evaluate` on a CPU, and what it would cost in accuracy.

`evaluate` runs the checkpoint in bf16 (BatchNorm folded, convolutions fused with the ReLU or
addition after them, channels_last), so the accuracy it reports is the trained network's up to
bf16 rounding. This script quantizes the same folded fp32 network to int8 after training
(PyTorch's FX graph mode, static quantization with the `x86` engine's default settings:
per-channel int8 weights, activations observed on calibration images) and times, over the
test images of CKPT's dataset in alternating rounds:

- `bf16`: evaluate's own loop (cifarnet.training.step.evaluate on the evaluate model);
- `int8`: the same loop over the quantized network (int8 convolutions use AVX512-VNNI).

Calibration uses the first --calibration training images, never test images.

    python scripts/int8_probe.py runs/train/best.pt --data-dir DATA [--rounds 3]

Prints one JSON line per round, then a summary line: images/s per variant, the seconds the
quantization took, top-1 in fp32, bf16 and int8, and how far bf16's and int8's logits are from
fp32's (max |delta| and top-1 agreement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from evaluate_variants import against, images_per_second  # this folder's sibling script

from cifarnet.data.datasets import load_dataset
from cifarnet.data.loader import BatchLoader
from cifarnet.tasks.inference import LoadedModel, load_inference_model
from cifarnet.training.step import evaluate


def quantize_int8(loaded: LoadedModel, calibration: list) -> torch.nn.Module:
    """The fp32 `loaded.module` as a static int8 network, its activation ranges observed on
    `calibration` batches ((x float (B, 3, 32, 32), y (B,)))."""
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError:
        sys.exit("this torch has no torch.ao.quantization.quantize_fx (moved to torchao)")
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        # torch.ao.quantization warns on every call that it is deprecated in favour of torchao,
        # which this machine does not have; the warnings say nothing about this model.
        warnings.simplefilter("ignore")
        example = (calibration[0][0][:1],)
        observed = prepare_fx(loaded.module, get_default_qconfig_mapping("x86"), example)
        with torch.no_grad():
            for x, _ in calibration:
                observed(x)
        return convert_fx(observed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=1000)  # evaluate's default
    parser.add_argument("--calibration", type=int, default=2000, help="training images")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    bf16 = load_inference_model(args.checkpoint, "cpu", "bf16")
    fp32 = load_inference_model(args.checkpoint, "cpu", "fp32", fuse=False)  # for prepare_fx
    data = load_dataset(bf16.info.dataset, args.data_dir, download=False)

    def batches(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor) -> list:
        """(x float (B, 3, 32, 32) in loaded's memory format, y (B,)) batches, made once."""
        return list(BatchLoader(images, labels, args.batch_size, loaded.input).batches())

    test_bf16 = batches(bf16, data.test_images, data.test_labels)
    test_fp32 = batches(fp32, data.test_images, data.test_labels)
    n = args.calibration
    start = time.perf_counter()
    int8_module = quantize_int8(fp32, batches(fp32, data.train_images[:n], data.train_labels[:n]))
    quantize_seconds = time.perf_counter() - start

    variants = {
        "bf16": lambda: evaluate(bf16.module, test_bf16, bf16.runtime, keep_logits=True),
        "int8": lambda: evaluate(int8_module, test_fp32, fp32.runtime, keep_logits=True),
    }
    for run in variants.values():  # warm-up: first calls create oneDNN's primitives, untimed
        run()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            rates[name].append(images_per_second(run))
        print(json.dumps({"round": r + 1, **{k: round(v[-1], 1) for k, v in rates.items()}}))

    reference = evaluate(fp32.module, test_fp32, fp32.runtime, keep_logits=True)
    results = {name: run() for name, run in variants.items()}
    print(
        json.dumps(
            {
                "images": reference.count,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "calibration_images": n,
                "median_images_per_second": {
                    k: round(statistics.median(v), 1) for k, v in rates.items()
                },
                "quantize_seconds": round(quantize_seconds, 1),
                "top1": {"fp32": reference.top1, **{k: r.top1 for k, r in results.items()}},
                "against_fp32": {k: against(r, reference) for k, r in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
