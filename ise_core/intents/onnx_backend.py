"""ONNX Runtime backends for the sentence-transformer models: export once, quantize once, run.

``embedding.backend: onnx`` runs the same network as the torch backend through ONNX Runtime;
``onnx-int8`` runs a dynamically quantized copy. Both are built offline from the local model
folder (the reassembled mpnet, or MiniLM from its package) the first time they are needed,
and cached beside it:

    <model_dir>/<model>.onnx-<source sha256[:12]>/
        model.onnx        the fp32 graph: token ids + mask → unit-length sentence embedding
        model.int8.onnx   the same graph with the attention projections quantized to int8
        manifest.json     export recipe version, source weights hash, sha256 + size per file

The folder is built in a temp dir under a file lock and renamed into place, like the mpnet
reassembly, and its name carries the hash of the weights it came from, so changed weights get
a new export instead of a stale one. Loading checks each file's recorded size against the
manifest (hashing 440 MB on every load would cost more than the load).

Why not ``SentenceTransformer(..., backend="onnx")``: that path loads through optimum-onnx,
whose only release requires transformers < 4.58, and this project runs transformers 5. The
export here uses torch's TorchScript ONNX exporter on the model's own transformer module and
puts mean pooling and L2 normalisation into the graph, so one ``run`` returns the embeddings.
Tokenisation uses the model's ``tokenizer.json`` with the fast ``tokenizers`` library, with
the sentence-transformers settings (stripped texts, truncation at ``max_seq_length``, padding
to the longest text of the batch). Texts are batched by token length, so a batch pads little.

What int8 quantizes, and why not everything: dynamic quantization maps each activation tensor
to uint8 with one scale. The input of the feed-forward block's down-projection (the GELU
output, 3072 wide) has outlier channels; with them on one scale, quantizing that layer alone
took the cosine to the fp32 vectors down to ~0.66 on this project's requests, and the
up-projection alone to ~0.98. So ``onnx-int8`` quantizes the hidden × hidden projections
(attention q, k, v and output) and keeps the feed-forward weights in fp32. The benchmark
``benchmarks/intents_scale.py --equivalence`` prints how close each backend is to torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ise_core.errors import BackendError

OnnxVariant = Literal["fp32", "int8"]
# Bumped whenever the export or quantization recipe changes: a folder from another recipe is
# rebuilt, never reused.
EXPORT_RECIPE = 1
OPSET = 17
FILES: dict[OnnxVariant, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
_MANIFEST = "manifest.json"
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class ModelInfo:
    """What the export needs to know about a sentence-transformer folder."""

    path: Path
    max_seq_length: int
    hidden_size: int
    intermediate_size: int


def read_model_info(path: Path) -> ModelInfo:
    """Sequence limit and layer sizes of the model in ``path``; checks it mean-pools."""
    try:
        st_config = json.loads((path / "sentence_bert_config.json").read_text(encoding="utf-8"))
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path}: not a sentence-transformers model folder ({exc})") from None
    modes = [key for key, on in pooling.items() if key.startswith("pooling_mode_") and on]
    if modes != ["pooling_mode_mean_tokens"]:
        raise BackendError(
            f"{path}: the ONNX backend supports mean pooling only (the model uses {modes})"
        )
    return ModelInfo(
        path=path,
        max_seq_length=int(st_config["max_seq_length"]),
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["intermediate_size"]),
    )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_hash(model_path: Path) -> str:
    """sha256 of the model's weights (taken from the reassembly marker when there is one)."""
    marker = model_path / ".verified-sha256"
    if marker.is_file():
        recorded = marker.read_text(encoding="utf-8").split()
        if recorded:
            return recorded[0]
    weights = model_path / "model.safetensors"
    if not weights.is_file():
        raise BackendError(f"{model_path}: no model.safetensors to export to ONNX")
    return _sha256(weights)


def export_dir(model_name: str, model_path: Path, model_dir: Path) -> Path:
    return Path(model_dir) / f"{model_name}.onnx-{source_hash(model_path)[:12]}"


def _manifest_ok(folder: Path, variant: OnnxVariant) -> bool:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
        entry = manifest["files"][FILES[variant]]
        size = (folder / FILES[variant]).stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return manifest.get("recipe") == EXPORT_RECIPE and entry.get("size") == size


def exported_model(
    model_name: str, model_path: Path, model_dir: Path, variant: OnnxVariant
) -> Path:
    """The ONNX file of ``variant`` for the model in ``model_path``; exported on first use.

    Safe when processes race: the first builds under a file lock, the others find it done.
    """
    from filelock import FileLock

    folder = export_dir(model_name, model_path, model_dir)
    if _manifest_ok(folder, variant):
        return folder / FILES[variant]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if not _manifest_ok(folder, variant):
            _build(folder, read_model_info(model_path), variant)
    return folder / FILES[variant]


def _build(folder: Path, info: ModelInfo, variant: OnnxVariant) -> None:
    """Write the missing files of ``folder`` (fp32 first, int8 from it) and its manifest."""
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if folder.is_dir() and _manifest_ok(folder, "fp32"):
            shutil.copyfile(folder / FILES["fp32"], work / FILES["fp32"])
        else:
            _export_fp32(info, work / FILES["fp32"])
        wanted: list[OnnxVariant] = ["fp32", "int8"] if variant == "int8" else ["fp32"]
        if folder.is_dir() and _manifest_ok(folder, "int8"):
            shutil.copyfile(folder / FILES["int8"], work / FILES["int8"])
            wanted.append("int8")
        if "int8" in wanted and not (work / FILES["int8"]).is_file():
            _quantize(info, work / FILES["fp32"], work / FILES["int8"])
        manifest = {
            "recipe": EXPORT_RECIPE,
            "opset": OPSET,
            "source": str(info.path),
            "source_sha256": source_hash(info.path),
            "max_seq_length": info.max_seq_length,
            "files": {
                FILES[v]: {
                    "sha256": _sha256(work / FILES[v]),
                    "size": (work / FILES[v]).stat().st_size,
                }
                for v in dict.fromkeys(wanted)
            },
        }
        (work / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        work.chmod(0o755)  # mkdtemp makes it private; the cache is shared like the model's
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_fp32(info: ModelInfo, target: Path) -> None:
    """Trace the model's transformer + mean pooling + normalisation into an ONNX graph."""
    import warnings

    try:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise BackendError("exporting to ONNX needs torch and transformers installed") from None

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    hf_logging.disable_progress_bar()  # a weight-loading bar in every stage log helps nobody
    encoder = AutoModel.from_pretrained(str(info.path)).eval()
    sample = torch.ones((2, 8), dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated and about traced shape
        # arithmetic; the equivalence test is what vouches for the graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SentenceEmbedding(encoder),
            (sample, sample),
            str(target),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "sentence_embedding": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _quantize(info: ModelInfo, source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the hidden × hidden MatMuls (see the module docstring)."""
    import logging

    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source)).graph
    weights = {init.name: numpy_helper.to_array(init).shape for init in graph.initializer}
    square = (info.hidden_size, info.hidden_size)
    chosen = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(weights.get(i) == square for i in node.input)
    ]
    if not chosen:
        raise BackendError(f"{info.path}: found no hidden x hidden MatMul to quantize")
    # The quantizer logs a "consider pre-processing" hint at WARNING on the root logger.
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            nodes_to_quantize=chosen,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        root.setLevel(previous)


class OnnxEncoder:
    """Embeds texts with an exported model: unit-length float32 rows, in input order."""

    def __init__(self, model_file: Path, info: ModelInfo, threads: int) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise BackendError(
                "embedding.backend onnx needs onnxruntime and tokenizers installed"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own many kinds
            raise BackendError(f"cannot load ONNX model {model_file}: {exc}") from exc
        self.tokenizer = Tokenizer.from_file(str(info.path / "tokenizer.json"))
        # tokenizer.json ships fixed-length padding and another truncation length; use the
        # sentence-transformers settings instead.
        self.tokenizer.enable_truncation(max_length=info.max_seq_length)
        self.tokenizer.no_padding()
        self.pad_id = self._pad_id(info.path)
        self.threads = threads

    def _pad_id(self, path: Path) -> int:
        special = json.loads((path / "special_tokens_map.json").read_text(encoding="utf-8"))
        pad = special.get("pad_token")
        token = pad.get("content") if isinstance(pad, dict) else pad
        pad_id = self.tokenizer.token_to_id(str(token)) if token else None
        return int(pad_id) if pad_id is not None else 0

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        # sentence-transformers strips each text before tokenising; do the same.
        encodings = self.tokenizer.encode_batch([text.strip() for text in texts])
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")  # longest first: batches pad little
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for slot, row in enumerate(rows):
                tokens = encodings[int(row)].ids
                ids[slot, : len(tokens)] = tokens
                mask[slot, : len(tokens)] = 1
            (vectors,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out
