"""``python -m kd_lightning.export RUN_DIR|CKPT [--out DIR] [--input uint8|float]``

Writes, by default into ``<run dir>/export/``:

- ``student_state_dict.pt``: the student's weights only (no teacher, no loss-term adapters); also a valid
  ``teacher.checkpoint`` for a next distillation;
- ``student.yaml``: how to rebuild it (``hydra.utils.instantiate(cfg.model)``), its input and normalisation;
- ``student.onnx`` and ``student.pt2`` (``torch.export``): the student *with the dataset's normalisation built
  in*, input ``images`` (N, C, H, W) uint8 pixels 0..255 (``--input float``: float32 in 0..1), output ``logits``.

Then each is checked against the PyTorch student fed through the training pipeline's own normalisation on
``--num-images`` test images: max |Δlogits| and accuracy are printed (``--no-check`` skips this).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kd_lightning.errors import ConfigError, KDError
from kd_lightning.export.checkpoint import read_checkpoint, student_state_dict
from kd_lightning.export.deploy import INPUTS, Deployable, export_onnx, export_program

log = logging.getLogger("kd_lightning.export")


def _datamodule(data_cfg: dict | None):
    """The run's datamodule, set up (its test split and its normalisation statistics)."""
    if data_cfg is None:
        raise ConfigError("the checkpoint holds no data config: the test images and normalisation are unknown")
    datamodule = instantiate(OmegaConf.create(data_cfg))
    datamodule.setup("test")
    return datamodule


def _predict_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


def _batched(predict, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([predict(images[i : i + batch]) for i in range(0, len(images), batch)])


def export(run: str | Path, out: Path | None = None, input: str = "uint8", num_images: int = 1000,
           check: bool = True, formats: tuple[str, ...] = ("onnx", "pt2")) -> dict:
    """Export a run's student; returns ``{format: {"path", "max_abs_diff", "accuracy"}}`` (see module docstring)."""
    checkpoint = read_checkpoint(run)
    facts = checkpoint["hyper_parameters"]
    ckpt_path = Path(checkpoint["_path"])
    out = Path(out) if out else ckpt_path.parent.parent / "export"
    out.mkdir(parents=True, exist_ok=True)
    net = instantiate(facts["student"])
    state = student_state_dict(checkpoint)
    net.load_state_dict(state)
    net.eval()

    datamodule = _datamodule(facts.get("data"))
    data = facts["data"]  # the configured statistics as written, else those the datamodule computed
    mean = list(data["mean"]) if data.get("mean") is not None else datamodule.transform.mean.tolist()
    std = list(data["std"]) if data.get("std") is not None else datamodule.transform.std.tolist()
    images, labels = datamodule.splits["test"]
    images, labels = images[:num_images], labels[:num_images]
    shape = list(images.shape[1:])

    torch.save(state, out / "student_state_dict.pt")
    spec = {
        "model": facts["student"],
        "num_classes": facts.get("num_classes"),
        "dataset": facts["data"].get("name"),
        "input": {"name": "images", "layout": "NCHW", "shape": shape, **(
            {"dtype": "uint8", "range": "0..255"} if input == "uint8" else {"dtype": "float32", "range": "0..1"})},
        "normalisation": {"mean": mean, "std": std, "built_into": ["student.onnx", "student.pt2"]},
        "output": {"name": "logits", "shape": ["N", facts.get("num_classes")]},
        "checkpoint": str(ckpt_path),
    }
    (out / "student.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(spec)))

    model = Deployable(net, mean, std, input)
    files = {"state_dict": out / "student_state_dict.pt", "config": out / "student.yaml"}
    if "onnx" in formats:
        files["onnx"] = export_onnx(model, shape, out / "student.onnx")
    if "pt2" in formats:
        files["pt2"] = export_program(model, shape, out / "student.pt2")

    results = {name: {"path": str(path)} for name, path in files.items()}
    if not check:
        return results
    raw = images if input == "uint8" else images.float() / 255.0
    with torch.no_grad():
        reference = _batched(lambda x: net(datamodule.transform(x, train=False)), images)
        predictions = {"pytorch": reference}
        if "onnx" in files:
            predictions["onnx"] = _batched(lambda x: _predict_onnx(files["onnx"], x), raw)
        if "pt2" in files:
            program = torch.export.load(str(files["pt2"])).module()
            predictions["pt2"] = _batched(program, raw)
        predictions["pytorch"] = predictions.pop("pytorch")  # printed last: the reference
    for name, logits in predictions.items():
        entry = results.setdefault(name, {})
        entry["max_abs_diff"] = float((logits - reference).abs().max())
        entry["accuracy"] = float((logits.argmax(1) == labels).float().mean())
        entry["agreement"] = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder (uses checkpoints/last.ckpt) or a .ckpt file")
    parser.add_argument("--out", type=Path, help="output folder (default: <run dir>/export)")
    parser.add_argument("--input", choices=INPUTS, default="uint8", help="what the exported models take")
    parser.add_argument("--num-images", type=int, default=1000, help="test images for the check")
    parser.add_argument("--no-check", action="store_true", help="skip comparing the exports with PyTorch")
    parser.add_argument("--formats", default="onnx,pt2", help="comma-separated: onnx, pt2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        results = export(args.run, args.out, args.input, args.num_images, not args.no_check,
                         tuple(f for f in args.formats.split(",") if f))
    except KDError as err:
        parser.exit(1, f"error: {err}\n")
    for name, entry in results.items():
        if "path" in entry:
            print(f"{name:>10}: {entry['path']}")
    checked = {k: v for k, v in results.items() if "accuracy" in v}
    if checked:
        print(f"\nCheck on {args.num_images} test images (max |Δ logits| vs PyTorch, accuracy, same argmax):")
        for name, entry in checked.items():
            print(f"{name:>10}: max_abs_diff={entry['max_abs_diff']:.2e}  accuracy={100 * entry['accuracy']:.2f} %  "
                  f"agreement={100 * entry['agreement']:.2f} %")


if __name__ == "__main__":
    main()
