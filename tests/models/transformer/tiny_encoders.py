"""Tiny random encoders of several architectures, each with a tokenizer of
its kind trained on the repository's data samples, saved to a directory
that `from_pretrained` reads with no network."""
import json
from pathlib import Path
from typing import Dict, List

import spacy
from spacy.tokens import DocBin

DATA = Path(__file__).resolve().parents[3] / "data"
# Each kind: the tokenizer it trains and the config of its encoder.
KINDS = ("bert", "roberta", "deberta-v2", "modernbert", "xlm-roberta", "distilbert", "electra")
MAX_POSITIONS = 64
WIDTH = 32


def sample_texts(limit: int = 400) -> List[str]:
    nlp = spacy.blank("en")
    texts: List[str] = []
    for name in ("btc-sample", "goemotions-sample"):
        docs = DocBin().from_disk(DATA / name / "train.spacy").get_docs(nlp.vocab)
        texts += [doc.text for _, doc in zip(range(limit // 2), docs)]
    return texts


def save_tiny_encoder(kind: str, path: Path, texts: List[str]) -> Path:
    import transformers

    tokenizer = _tokenizer(kind, texts)
    vocab_size = len(tokenizer)
    common = dict(vocab_size=vocab_size, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=MAX_POSITIONS)
    if kind == "bert":
        config = transformers.BertConfig(**common)
    elif kind == "electra":
        config = transformers.ElectraConfig(embedding_size=16, **common)
    elif kind == "roberta":
        config = transformers.RobertaConfig(**{**common, "max_position_embeddings": MAX_POSITIONS + 2}, pad_token_id=tokenizer.pad_token_id)
    elif kind == "xlm-roberta":
        config = transformers.XLMRobertaConfig(**{**common, "max_position_embeddings": MAX_POSITIONS + 2}, pad_token_id=tokenizer.pad_token_id)
    elif kind == "deberta-v2":
        config = transformers.DebertaV2Config(**common, relative_attention=True, position_biased_input=False,
                                              pos_att_type=["p2c", "c2p"], pad_token_id=tokenizer.pad_token_id)
    elif kind == "modernbert":
        config = transformers.ModernBertConfig(**common, global_attn_every_n_layers=2, local_attention=16,
                                               bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                                               pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                                               sep_token_id=tokenizer.sep_token_id)
    elif kind == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=vocab_size, dim=WIDTH, n_layers=2, n_heads=2, hidden_dim=64,
                                               max_position_embeddings=MAX_POSITIONS)
    else:
        raise ValueError(kind)
    transformers.set_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tokenizer(kind: str, texts: List[str]):
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind in ("bert", "distilbert", "electra"):
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
        cls = {"bert": transformers.BertTokenizer, "distilbert": transformers.DistilBertTokenizer,
               "electra": transformers.ElectraTokenizer}[kind]
        return cls(vocab=tok.get_vocab())
    if kind == "roberta":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        return transformers.RobertaTokenizer(vocab=model["vocab"], merges=merges)
    if kind in ("xlm-roberta", "deberta-v2"):
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if kind == "xlm-roberta" else ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=400, special_tokens=specials, unk_token=specials[3]))
        vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]
        if kind == "xlm-roberta":
            return transformers.XLMRobertaTokenizer(vocab=vocab)
        return transformers.DebertaV2Tokenizer(vocab=vocab)
    if kind == "modernbert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        return transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    raise ValueError(kind)


def save_all(root: Path, kinds=KINDS) -> Dict[str, Path]:
    texts = sample_texts()
    return {kind: save_tiny_encoder(kind, root / kind, texts) for kind in kinds}
