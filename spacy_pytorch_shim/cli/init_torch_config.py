"""`python -m spacy init torch-config`: a complete, trainable config for our
components, written from the configs shipped in the package (the files of the
repository's `configs/`, installed as the package data
`spacy_pytorch_shim.configs`), so the files and what the command writes cannot
drift apart.

Presets are found by file name: `configs/<name>.cfg` is the `efficiency`
preset of the component `torch_<name>`, `configs/<name>_accuracy.cfg` its
`accuracy` preset."""
import pkgutil
import sys
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import spacy.lang
import typer
from spacy.cli._util import Arg, Opt, init_cli
from spacy.util import CONFIG_SECTION_ORDER, combine_score_weights
from thinc.api import Config
from wasabi import msg

from ..teacher_targets import READER
from . import fail

COMPONENTS = ("torch_ner", "torch_textcat", "torch_textcat_multilabel")
OPTIMIZE = ("efficiency", "accuracy")
GPU_ALLOCATOR = "pytorch"  # torch and cupy share one GPU memory pool


class PresetError(ValueError):
    pass


# The presets on a Hugging Face encoder (`--encoder`): configs/<name>_transformer.cfg.
TRANSFORMER = "transformer"


def preset_name(component: str, optimize: str) -> str:
    """The file name of a preset: `ner.cfg`, `textcat_accuracy.cfg`,
    `ner_transformer.cfg`, ..."""
    stem = component[len("torch_"):]
    return f"{stem}.cfg" if optimize == "efficiency" else f"{stem}_{optimize}.cfg"


def preset_files() -> Traversable:
    """The folder of shipped configs: configs/ in a checkout (editable
    install), spacy_pytorch_shim/configs/ in site-packages otherwise."""
    return resources.files("spacy_pytorch_shim.configs")


def available_presets() -> Dict[Tuple[str, str], str]:
    """(component, optimize) -> file name, for every preset file shipped."""
    shipped = {entry.name for entry in preset_files().iterdir()}
    return {
        (component, optimize): preset_name(component, optimize)
        for component in COMPONENTS
        for optimize in OPTIMIZE + (TRANSFORMER,)
        if preset_name(component, optimize) in shipped
    }


def read_preset(component: str, optimize: str) -> str:
    presets = available_presets()
    if (component, optimize) not in presets:
        listed = ", ".join(f"{c} ({o}: {name})" for (c, o), name in sorted(presets.items()))
        raise PresetError(
            f"No {optimize!r} preset for {component}: configs/{preset_name(component, optimize)} "
            f"is not in this installation of spacy-pytorch-shim. Presets shipped: {listed}"
        )
    return preset_files().joinpath(presets[(component, optimize)]).read_text(encoding="utf8")


def read_shipped(name: str) -> str:
    """Any shipped config by name (`ner_spacy_tok2vec` for configs/ner_spacy_tok2vec.cfg)."""
    names = sorted(entry.name[: -len(".cfg")] for entry in preset_files().iterdir() if entry.name.endswith(".cfg"))
    if name not in names:
        raise PresetError(f"No shipped config {name!r} (--shipped): choose from {', '.join(names)}")
    return preset_files().joinpath(f"{name}.cfg").read_text(encoding="utf8")


def normalize_component(name: str) -> str:
    """`ner` / `torch_ner` -> `torch_ner` (spaCy's names for the pipeline option)."""
    full = name if name.startswith("torch_") else f"torch_{name}"
    if full not in COMPONENTS:
        short = ", ".join(c[len("torch_"):] for c in COMPONENTS)
        raise PresetError(f"Unknown component {name!r} in --pipeline: choose from {short}")
    return full


def torch_config(
    pipeline: List[str],
    *,
    optimize: str = "efficiency",
    gpu: bool = False,
    lang: str = "en",
    encoder: Optional[Tuple[str, int]] = None,
    distill: bool = False,
) -> Tuple[str, List[str]]:
    """The config text for `pipeline` (component names) and notes on what was
    merged. One component: its preset file as shipped (with `gpu`, the GPU
    allocator set). Several: the first preset with the others' components
    added, score weights combined, and [training] from the first preset.
    `encoder` (name, width): the transformer presets, on that Hugging Face
    encoder (the config's [encoder] section). `distill`: a student's config,
    trained on the gold data and a teacher's stored outputs (${paths.targets})."""
    if optimize not in OPTIMIZE:
        raise PresetError(f"--optimize must be one of {', '.join(OPTIMIZE)} (got {optimize!r})")
    if encoder is not None:
        optimize = TRANSFORMER
    if lang not in languages():
        # spaCy could not build the config: `spacy init config` refuses it as well.
        raise PresetError(f"--lang {lang!r}: not a language of spaCy; choose from {', '.join(languages())}")
    components = [normalize_component(name) for name in pipeline]
    if not components:
        raise PresetError("--pipeline names no component")
    if len(set(components)) != len(components):
        raise PresetError(f"--pipeline names a component twice: {pipeline}")
    texts = [read_preset(component, optimize) for component in components]
    if len(components) == 1 and not gpu and lang == "en" and encoder is None and not distill:
        return texts[0], []
    configs = [Config(section_order=CONFIG_SECTION_ORDER).from_str(text, interpolate=False) for text in texts]
    config, notes = configs[0], []
    for component, other in zip(components[1:], configs[1:]):
        config["nlp"]["pipeline"].append(component)
        config["components"][component] = other["components"][component]
        for key in ("dropout", "patience", "max_steps", "eval_frequency"):
            if other["training"][key] != config["training"][key]:
                notes.append(f"training.{key}: {config['training'][key]} (not {other['training'][key]} as for {component})")
        for key, value in other["training"]["optimizer"].items():
            if config["training"]["optimizer"].get(key) != value:
                notes.append(
                    f"training.optimizer.{key}: {config['training']['optimizer'].get(key)} (not {value} as for {component})"
                )
    if len(configs) > 1:
        config["training"]["score_weights"] = combine_score_weights(
            [dict(c["training"]["score_weights"]) for c in configs]
        )
    if gpu:
        config["system"]["gpu_allocator"] = GPU_ALLOCATOR
    config["nlp"]["lang"] = lang
    if encoder is not None:
        config["encoder"]["name"], config["encoder"]["width"] = encoder
        if len(components) > 1:
            share_encoder(config, components)
            notes.append(f"one encoder (components.{SHARED_ENCODER}) for {', '.join(components)}, through listeners")
    if distill:
        read_stored_targets(config)
    return config.to_str(), notes


# The reader of a student's training data: gold examples and a teacher's
# stored outputs, with the settings that bench/distill.py measures
# (docs/benchmarks.md, "Distillation").
DISTILLATION_CORPUS = {
    "@readers": READER,
    "path": "${paths.train}",
    "targets_path": "${paths.targets}",
    "targets_ratio": 2.0,
    "temperature": 2.0,
    "weight": 1.0,
}


def read_stored_targets(config: Config) -> None:
    """[corpora.train] reads the gold data with the stored outputs of
    `spacy teacher-targets` in ${paths.targets} (the preset's max_length and
    limit kept)."""
    config["paths"]["targets"] = None
    train = config["corpora"]["train"]
    config["corpora"]["train"] = dict(DISTILLATION_CORPUS, max_length=train.get("max_length", 0), limit=train.get("limit", 0))


# The component that holds the encoder that several components listen to.
SHARED_ENCODER = "tok2vec"


def share_encoder(config: Config, components: List[str]) -> None:
    """One encoder pass per batch for all `components`: spaCy's tok2vec
    component holds the encoder of the first one's preset, and each component
    gets a listener in its place. The presets' ParamGroups wrapper (the
    encoder's learn-rate multiplier) moves with the encoder."""
    models = [config["components"][component]["model"] for component in components]
    groups = {key: value for key, value in models[0].items() if key != "model"}
    models = [model["model"] for model in models]  # the presets' ParamGroups wrappers, removed
    shared = dict(groups, model=models[0]["tok2vec"])
    config["components"] = {SHARED_ENCODER: {"factory": "tok2vec", "model": shared}, **config["components"]}
    for component, model in zip(components, models):
        model["tok2vec"] = {
            "@architectures": "spacy.Tok2VecListener.v1", "width": "${encoder.width}", "upstream": SHARED_ENCODER,
        }
        config["components"][component]["model"] = model
    config["nlp"]["pipeline"].insert(0, SHARED_ENCODER)


def read_encoder_width(name: str) -> int:
    """The hidden size of the Hugging Face encoder `name`, from its config
    (a local directory, the hub cache, or the hub where the environment
    allows)."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise PresetError('--encoder needs transformers: pip install "spacy-pytorch-shim[transformers]"') from None
    try:
        width = getattr(AutoConfig.from_pretrained(name), "hidden_size", None)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PresetError(f"--encoder {name!r}: cannot read its config ({first}); give its hidden size with --encoder-width") from None
    if not isinstance(width, int) or width < 1:
        raise PresetError(f"--encoder {name!r}: its config gives no hidden size; give it with --encoder-width")
    return width


def languages() -> List[str]:
    """spaCy's language codes: the packages of spacy.lang."""
    return sorted(module.name for module in pkgutil.iter_modules(spacy.lang.__path__) if module.ispkg)


@init_cli.command("torch-config")
def init_torch_config_cli(
    # fmt: off
    ctx: typer.Context,
    output_file: Path = Arg(..., help="File to write the config to, or - for stdout", allow_dash=True),
    pipeline: str = Opt("ner", "--pipeline", "-p", help="Comma-separated components: ner, textcat (exclusive classes), textcat_multilabel"),
    optimize: str = Opt("efficiency", "--optimize", "-o", help="efficiency (faster, smaller) or accuracy (larger, slower)"),
    gpu: bool = Opt(False, "--gpu", "-G", help="For a GPU: torch and cupy share the GPU memory pool (gpu_allocator = pytorch)"),
    lang: str = Opt("en", "--lang", "-l", help="Language code of the pipeline"),
    shipped: Optional[str] = Opt(None, "--shipped", "-s", help="Instead: write the shipped config of this name as it is (e.g. ner_spacy_tok2vec; the file names of configs/ without .cfg)"),
    force_overwrite: bool = Opt(False, "--force", "-F", help="Overwrite the output file if it exists"),
    encoder: Optional[str] = Opt(None, "--encoder", "-e", help="A Hugging Face encoder (hub name or local directory): the transformer presets on it instead of --optimize's"),
    encoder_width: Optional[int] = Opt(None, "--encoder-width", help="The encoder's hidden size (default: read from its config)"),
    distill: bool = Opt(False, "--distill", "-D", help="A student's config: trains on the gold data and a teacher's outputs stored by spacy teacher-targets (--paths.targets)"),
    # fmt: on
):
    """Write a complete, trainable config for torch_ner, torch_textcat and
    torch_textcat_multilabel from the configs shipped with
    spacy-pytorch-shim (like `spacy init config` for spaCy's components)."""
    is_stdout = str(output_file) == "-"
    overwrites = not is_stdout and output_file.exists()
    if overwrites and (output_file.is_dir() or not force_overwrite):
        # As `spacy init config`: an existing file is overwritten with --force only.
        fail(f"{output_file}: {'is a directory' if output_file.is_dir() else 'exists; to overwrite it, add --force (-F)'}")
    if shipped is not None:
        # The shipped file is written as it is: the options that make a config do not apply.
        given = [f"--{name.replace('_', '-')}" for name in ("pipeline", "optimize", "gpu", "lang", "encoder", "encoder_width", "distill") if ctx.get_parameter_source(name).name == "COMMANDLINE"]
        if given:
            fail(f"--shipped {shipped} writes the shipped file as it is: {', '.join(given)} cannot change it")
    try:
        if shipped is not None:
            text, notes = read_shipped(shipped), []
        else:
            names = [name.strip() for name in pipeline.split(",") if name.strip()]
            if encoder is None and encoder_width is not None:
                raise PresetError("--encoder-width is the width of --encoder: give --encoder too")
            if encoder is not None and ctx.get_parameter_source("optimize").name == "COMMANDLINE":
                raise PresetError("--encoder chooses the transformer presets: --optimize does not apply")
            if encoder_width is not None and encoder_width < 1:
                raise PresetError(f"--encoder-width {encoder_width}: must be a positive integer")
            chosen = None if encoder is None else (encoder, encoder_width or read_encoder_width(encoder))
            text, notes = torch_config(names, optimize=optimize, gpu=gpu, lang=lang, encoder=chosen, distill=distill)
    except PresetError as err:
        fail(str(err))
    if notes:  # on stderr: with `-`, stdout is the config
        print("Training settings differ between the presets; the first component's are used:", file=sys.stderr)
        for note in notes:
            print(f"  {note}", file=sys.stderr)
    if is_stdout:
        print(text, end="")
    else:
        try:
            output_file.parent.mkdir(parents=True, exist_ok=True)
            output_file.write_text(text, encoding="utf8")
        except OSError as err:
            fail(f"{output_file}: cannot write it ({err.strerror}: {err.filename})")
        targets = " --paths.targets TARGETS_DIR" if distill else ""
        msg.good(f"Saved config to {output_file}{' (overwrote it: --force)' if overwrites else ''}", "Train it with: python -m spacy train "
                 f"{output_file} --paths.train TRAIN.spacy --paths.dev DEV.spacy{targets}")
