"""Weight format conversion during a surgery (``--weights-format``): safetensors <-> pytorch_model.bin.

Conversion cannot stream (torch.save pickles whole tensors), so each file is loaded, edited and saved in turn: peak
memory is one shard, not the model. Shared tensors (tied embeddings saved twice in a .bin) are kept once when
writing safetensors, as transformers does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .formats import WEIGHT_FORMATS
from .formats.json_file import JsonStyle, dump_json, read_json_object
from .formats.weights import Progress, TensorEdit
from .inventory import Inventory, WeightSet
from .plan import Plan


def convert_weights(
    inventory: Inventory,
    weights: WeightSet,
    plan: Plan,
    staging: Path,
    progress: Progress | None,
    edits: Mapping[str, TensorEdit],
) -> Iterable[tuple[str, bool]]:
    """Write ``weights`` with ``edits`` applied in ``plan.weights_format``; yields the files written."""
    target = plan.weights_format
    assert target is not None
    fmt = WEIGHT_FORMATS[target]
    single, pattern, index_name = fmt.single_file, fmt.shard_pattern, fmt.index_file
    count = len(weights.files)
    renamed = {
        source: single if count == 1 else pattern.format(i=i, n=count) for i, source in enumerate(weights.files, 1)
    }
    total = parameters = 0
    aliases = tied_aliases(inventory.config) if target == "pytorch" else {}
    alias_locations: dict[str, str] = {}
    for source, destination in renamed.items():
        tensors = _load(inventory.path(source), weights.format)
        for name, edit in edits.items():
            if weights.locations[name] == source:
                tensors[name] = apply_edit(tensors[name], edit)
        if target == "safetensors":
            tensors = _unique(tensors)  # safetensors refuses tensors that share memory
        for alias, tied_to in aliases.items():
            # transformers 4.x wrote tied weights under both names into pytorch_model.bin and reports a missing
            # alias as "newly initialized": restore it as the same tensor (torch.save stores it once)
            if alias not in weights.specs and tied_to in tensors and alias not in alias_locations:
                tensors[alias] = tensors[tied_to]
                alias_locations[alias] = destination
        total += _save(tensors, staging / destination, target)
        # as transformers' num_parameters(): a (1, V) vocabulary buffer (final_logits_bias) is no parameter
        parameters += sum(
            t.numel() for name, t in _unique(tensors).items() if name not in edits or edits[name].axis == 0
        )
        if progress is not None:
            progress((staging / destination).stat().st_size)
        yield destination, True
    if count > 1 or weights.index is not None:
        weight_map = {name: renamed[weights.locations[name]] for name in weights.specs} | alias_locations
        document: dict[str, Any] = {"metadata": {"total_size": total}, "weight_map": weight_map}
        style = JsonStyle(indent=2)
        if weights.index is not None:
            original, style = read_json_object(inventory.path(weights.index))
            metadata = {**original.get("metadata", {}), "total_size": total}
            if isinstance(metadata.get("total_parameters"), int):  # transformers 5 records it; rows were added
                metadata["total_parameters"] = parameters
            document = {**original, **document, "metadata": metadata}
        (staging / index_name).write_text(dump_json(document, style), encoding="utf-8")
        yield index_name, True


def apply_edit(tensor: Any, edit: TensorEdit) -> Any:
    """A grown copy of a torch tensor with the edit's rows set along ``edit.axis`` (cast with torch's own rounding):
    the same code as the ``pytorch_model.bin`` writer's, so both formats grow a tensor alike."""
    from .formats.torch_bin import apply_edit as grow

    return grow(tensor, edit)


def _load(path: Path, fmt: str) -> dict[str, Any]:
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    from .formats.torch_bin import load_state_dict

    return {name: tensor.clone() for name, tensor in load_state_dict(path).items()}


def _save(tensors: dict[str, Any], destination: Path, fmt: str) -> int:
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(destination), metadata={"format": "pt"})
    else:
        from .formats.torch_bin import write_state_dict

        write_state_dict(tensors, destination)
    return sum(t.numel() * t.element_size() for t in _unique(tensors).values())


def tied_aliases(config: Mapping[str, Any] | None) -> dict[str, str]:
    """``{alias: original}`` of the tied weights transformers declares for the config's architectures
    (``_tied_weights_keys``, a mapping since transformers 5); empty when it cannot tell."""
    aliases: dict[str, str] = {}
    try:
        import transformers
    except ImportError:
        return aliases
    for architecture in (config or {}).get("architectures") or []:
        try:
            keys = getattr(getattr(transformers, str(architecture), None), "_tied_weights_keys", None)
        except Exception:  # a lazily imported model module that fails to import: no aliases from it
            continue
        if isinstance(keys, Mapping):
            aliases.update({str(alias): str(original) for alias, original in keys.items()})
    return aliases


def _unique(tensors: dict[str, Any]) -> dict[str, Any]:
    """One name per stored tensor (aliases of one tensor share their storage and count once)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    unique = {}
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        unique[name] = tensor
    return unique
