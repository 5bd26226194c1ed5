"""Processor plumbing for ``TransformersAnswerer``: loading, and each image preprocessed once.

Two things the stock transformers processors do not give us:

- Loading without torchvision. Processors of video-capable models (Qwen2-VL, Qwen2.5-VL,
  SmolVLM) also load a video processor, which needs torchvision; ``AutoProcessor`` then fails.
  ``load_processor`` falls back to the same processor class built without its video processor
  (the image processor's PIL backend, the tokenizer and the chat template), which is all that
  answering about still images needs.
- One preprocessing per distinct image. The agent asks several sub-questions about the same
  image in one batch; ``OncePerImage`` stands in for ``processor.image_processor`` during a
  call, runs the real image processor once on the distinct images (by object identity) and
  assembles the per-row tensors from those results by indexing, so the processor's own prompt
  expansion (how many image tokens, tiles, grids) still applies unchanged.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

from idealagent.errors import ModelLoadError

log = logging.getLogger(__name__)

# processor_config.json entries that are sub-processors, not constructor options.
SUB_PROCESSOR_KEYS = {"image_processor", "video_processor", "tokenizer", "feature_extractor",
                      "processor_class", "audio_processor", "chat_template"}


def load_processor(name: str, load_kwargs: dict[str, Any]) -> Any:
    """``AutoProcessor`` for ``name``; if it fails for want of torchvision (a video processor),
    the same processor class built from its image processor, tokenizer and chat template."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(name, **load_kwargs)
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as error:
        log.info("AutoProcessor failed for %s (%s); building an image-only processor", name, error)
        return image_only_processor(name, load_kwargs, error)
    if not hasattr(processor, "image_processor"):  # AutoProcessor fell back to a bare tokenizer
        return image_only_processor(name, load_kwargs, None)
    return processor


def image_only_processor(name: str, load_kwargs: dict[str, Any], cause: Exception | None) -> Any:
    """The checkpoint's processor class without its video processor (see the module doc)."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    config = AutoConfig.from_pretrained(name, **load_kwargs)
    class_name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    if class_name is None or not hasattr(transformers, class_name):
        reason = f": {cause}" if cause else ""
        raise ModelLoadError(f"cannot build a processor for {name} ({config.model_type}){reason}")
    image_processor = AutoImageProcessor.from_pretrained(name, **load_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name, **load_kwargs)
    options = _processor_options(name, load_kwargs)
    cls = without_video_processor(getattr(transformers, class_name))
    accepted = inspect.signature(getattr(transformers, class_name).__init__).parameters
    options = {k: v for k, v in options.items() if k in accepted}
    return cls(image_processor=image_processor, tokenizer=tokenizer,
               chat_template=getattr(tokenizer, "chat_template", None), **options)


def without_video_processor(cls: type) -> type:
    """A subclass of processor class ``cls`` whose constructor has no video processor.

    ``ProcessorMixin`` reads its sub-processors off the constructor's signature, so leaving
    ``video_processor`` out of it is what stops the (torchvision-only) class check.
    """
    if "video_processor" not in inspect.signature(cls.__init__).parameters:
        return cls

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": __name__})


def _processor_options(name: str, load_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor options saved in processor_config.json (image_seq_len, patch_size...)."""
    from transformers.utils import cached_file

    try:
        path = cached_file(name, "processor_config.json", _raise_exceptions_for_missing_entries=False,
                           **{k: v for k, v in load_kwargs.items() if k in ("local_files_only",
                                                                          "revision", "cache_dir")})
    except OSError:
        path = None
    if not path or not Path(path).is_file():
        return {}
    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    return {k: v for k, v in saved.items() if k not in SUB_PROCESSOR_KEYS}


def model_inputs(processor: Any, once: OncePerImage, prompts: list[str], images: list[Any], model: Any) -> Any:
    """The processor's tensors for ``prompts`` (left-padded) and their ``images`` (every image
    of every prompt, in the order the prompts' image tokens come), ``once`` standing in for its
    image processor; on the model's device, pixels in its dtype (bf16 on a GPU)."""
    real, processor.image_processor = processor.image_processor, once
    try:
        inputs = processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
    finally:
        processor.image_processor = real
    inputs = inputs.to(model.device)
    for key, value in inputs.items():
        if key.startswith("pixel_values") and value.is_floating_point():
            inputs[key] = value.to(model.dtype)
    inputs.pop("labels", None)  # PaliGemma's processor adds training labels
    return inputs


class RejectedImages(Exception):
    """The image processor refused some images; ``errors`` maps ``id(image)`` to why."""

    def __init__(self, errors: dict[int, Exception]) -> None:
        super().__init__(f"{len(errors)} image(s) rejected")
        self.errors = errors


class OncePerImage:
    """Stands in for a processor's image processor: each distinct image (by ``id``) is
    preprocessed once, however many rows and calls use it; per-row outputs are assembled by
    indexing. Keep one per ``answer`` call: ids are only unique while the images are alive."""

    def __init__(self, image_processor: Any) -> None:
        self.wrapped = image_processor
        self.features: dict[int, dict[str, Any]] = {}  # id(image) -> that image's slice
        self.errors: dict[int, Exception] = {}
        self.images_processed = 0

    def __getattr__(self, name: str) -> Any:  # merge_size, image_grid_pinpoints, fetch_images...
        return getattr(self.wrapped, name)

    def __call__(self, images: Any, **kwargs: Any) -> Any:
        from transformers import BatchFeature

        nested = isinstance(images, (list, tuple)) and images and isinstance(images[0], (list, tuple))
        flat = [image for group in images for image in group] if nested else list(images)
        todo = list({id(image): image for image in flat if id(image) not in self.features
                     and id(image) not in self.errors}.values())
        if todo:
            self._preprocess(todo, nested, kwargs)
        rejected = {id(image): self.errors[id(image)] for image in flat if id(image) in self.errors}
        if rejected:
            raise RejectedImages(rejected)
        return BatchFeature(join_features([self.features[id(image)] for image in flat]))

    def _preprocess(self, images: list[Any], nested: bool, kwargs: dict[str, Any]) -> None:
        """One image-processor call for all ``images``; one per image if that call fails, so
        the images at fault are known and the others still go on."""
        try:
            self._store(images, self._run(images, nested, kwargs))
        except Exception:
            if len(images) == 1:
                raise
            for image in images:
                try:
                    self._store([image], self._run([image], nested, kwargs))
                except Exception as error:  # noqa: BLE001 - reported per image by the caller
                    self.errors[id(image)] = error

    def _run(self, images: list[Any], nested: bool, kwargs: dict[str, Any]) -> Any:
        self.images_processed += len(images)
        return self.wrapped([[image] for image in images] if nested else images, **kwargs)

    def _store(self, images: list[Any], output: Any) -> None:
        for image, part in zip(images, split_features(dict(output), len(images)), strict=True):
            self.features[id(image)] = part


def split_features(output: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Cut an image processor's output for ``count`` images into one dict per image.

    Qwen-style outputs concatenate every image's patches, so ``pixel_values`` is cut by
    ``image_grid_thw``; everything else has one entry per image along its first axis.
    """
    import numpy as np
    import torch

    parts: list[dict[str, Any]] = [{} for _ in range(count)]
    grid = output.get("image_grid_thw")
    for key, value in output.items():
        if key == "pixel_values" and grid is not None:
            sizes = [int(np.prod(list(row))) for row in grid]  # patches per image
            pieces = torch.as_tensor(value).split(sizes) if not isinstance(value, list) else None
            if pieces is None:
                raise ValueError("expected a tensor of patches for pixel_values")
        elif len(value) == count:
            pieces = [value[i : i + 1] for i in range(count)]
        else:
            raise ValueError(f"cannot split image-processor output {key!r} ({len(value)} entries "
                             f"for {count} images)")
        for part, piece in zip(parts, pieces):
            part[key] = piece
    return parts


def join_features(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch of ``parts`` (rows may repeat an image), as the image processor would return it.

    Tensors are concatenated along the first axis; where later axes differ (images processed
    in separate calls, padded to different tile counts) they are zero-padded, which is what the
    processors' own padding does.
    """
    import numpy as np
    import torch

    joined: dict[str, Any] = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        if isinstance(values[0], list):
            joined[key] = [item for value in values for item in value]
            continue
        tensors = [torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in values]
        shape = [max(sizes) for sizes in zip(*(t.shape[1:] for t in tensors))]
        padded = []
        for tensor in tensors:
            if list(tensor.shape[1:]) != shape:
                grown = tensor.new_zeros((tensor.shape[0], *shape))
                grown[tuple(slice(0, n) for n in tensor.shape)] = tensor
                tensor = grown
            padded.append(tensor)
        joined[key] = torch.cat(padded)
    return joined
