"""What the benchmark compares: the panel's datasets, their tasks and main
scores, and the four systems (spaCy's two presets and ours). One home for the
harness (run_bench.py) and its report (report.py)."""

# task -> spaCy pipe name for `init config -p`, our config per preset, main
# scores (the targets are on every one of them)
TASKS = {
    "ner": {"pipe": "ner", "main": ["ents_f"],
            "ours_cfg": {"efficiency": "configs/ner.cfg",
                         "accuracy": "configs/ner_accuracy.cfg"}},
    "textcat": {"pipe": "textcat", "main": ["cats_macro_f"],
                "ours_cfg": {"efficiency": "configs/textcat.cfg",
                             "accuracy": "configs/textcat_accuracy.cfg"}},
    "textcat_multilabel": {
        "pipe": "textcat_multilabel", "main": ["cats_macro_auc", "cats_macro_f"],
        "ours_cfg": {"efficiency": "configs/textcat_multilabel.cfg",
                     "accuracy": "configs/textcat_multilabel_accuracy.cfg"}},
}
DATASETS = {
    "btc": "ner",
    "wnut17": "ner",
    "ncbi_disease": "ner",
    "banking77": "textcat",
    "trec6": "textcat",
    "imdb": "textcat",
    "goemotions": "textcat_multilabel",
}
TASK_TITLES = {
    "ner": "Named entity recognition",
    "textcat": "Text classification, mutually exclusive labels",
    "textcat_multilabel": "Text classification, multi-label",
}
PRESETS = ["efficiency", "accuracy"]
# system name -> (side, preset); the order of every table and of the plot
SYSTEMS = {f"{side}-{preset}": (side, preset)
           for preset in PRESETS for side in ("spacy", "ours")}
# spaCy's accuracy preset names en_core_web_lg's vectors; the panel is scored
# without static vectors on both sides
SPACY_NO_VECTORS = {"paths.vectors": None,
                    "components.tok2vec.model.embed.include_static_vectors": False}
