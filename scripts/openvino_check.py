"""Cross-check `cifarnet evaluate` throughput with a second inference engine (OpenVINO).

If an independently tuned engine, given the same exported network, the same 10,000 test images
and the same bf16 arithmetic, lands at the same images/s, the limit is the CPU's convolution
throughput rather than cifarnet's evaluation loop. OpenVINO is not a cifarnet dependency:

    pip install openvino
    cifarnet export CKPT --onnx --out model.onnx
    python scripts/openvino_check.py model.onnx --data-dir DATA [--batch-size 250 500]

For every batch size it times one pass over the test split (after a warm-up pass) in each mode:
LATENCY (one request using every core) and THROUGHPUT (parallel requests in as many streams as
OpenVINO picks; printed), in bf16 and f32 inference precision. Prints one JSON line per run
with images/s and top-1.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import openvino as ov
import torch

from cifarnet import load_dataset
from cifarnet.tasks.inference import contract_input


def time_pass(
    compiled: ov.CompiledModel, images: np.ndarray, batch: int
) -> tuple[float, np.ndarray]:
    """Seconds for one pass over `images` (N, 3, 32, 32) float32 in [0, 1]; labels (N,)."""
    predictions = np.empty(len(images), dtype=np.int64)

    def store(request: ov.InferRequest, start: int) -> None:
        predictions[start : start + batch] = request.get_output_tensor(0).data.argmax(1)

    requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, requests)
    queue.set_callback(store)
    start_time = time.perf_counter()
    for start in range(0, len(images), batch):
        queue.start_async({0: images[start : start + batch]}, start)
    queue.wait_all()
    return time.perf_counter() - start_time, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", help="a model exported with `cifarnet export --onnx`")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[250, 500])
    args = parser.parse_args()

    data = load_dataset(args.dataset, args.data_dir, download=False)
    # (10000, 3, 32, 32) float32 in [0, 1]: the exported model's input contract
    images = contract_input(torch.device("cpu"))(data.test_images).numpy()
    labels = data.test_labels.numpy()
    core = ov.Core()
    for batch in args.batch_size:
        usable = len(images) // batch * batch  # a static batch axis: whole batches only
        model = core.read_model(args.onnx)
        model.reshape([batch, 3, 32, 32])
        for precision in ("bf16", "f32"):
            for mode in ("LATENCY", "THROUGHPUT"):
                config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": mode}
                compiled = core.compile_model(model, "CPU", config)
                time_pass(compiled, images[:usable], batch)
                seconds, predicted = time_pass(compiled, images[:usable], batch)
                print(
                    json.dumps(
                        {
                            "engine": f"openvino {ov.__version__}",
                            "precision": precision,
                            "mode": mode,
                            "streams": int(compiled.get_property("NUM_STREAMS")),
                            "batch_size": batch,
                            "images": usable,
                            "images_per_second": round(usable / seconds, 1),
                            "top1": round(100 * float((predicted == labels[:usable]).mean()), 2),
                        }
                    )
                )


if __name__ == "__main__":
    main()
