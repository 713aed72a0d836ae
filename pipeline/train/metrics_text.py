"""Generation metrics against references, from maintained libraries: ROUGE-L (``rouge-score``),
chrF and BLEU (``sacrebleu``), exact match.

Chinese has no spaces between words, so the libraries' word-level defaults see a whole sentence as
one "word" (rouge-score's default tokenizer even drops every non-ASCII character, scoring Chinese
as 0). Here ROUGE-L runs on ``CJKTokenizer`` tokens (each CJK character alone, Latin words and
numbers whole, lowercased), chrF is character n-grams by definition (sacrebleu's default, spaces
ignored), and BLEU uses sacrebleu's ``zh`` tokenizer (CJK characters split apart) when at least
``CJK_BLEU_SHARE`` of the references' letters are CJK, ``13a`` (its standard one) otherwise.
Scales: ``rouge_l`` and ``exact_match`` in [0, 1] (mean over examples), ``chrf`` and ``bleu``
0-100 (corpus scores, as sacrebleu reports them)."""

from __future__ import annotations

import re

CJK_BLEU_SHARE = 0.2  # above this share of CJK letters a corpus is scored as Chinese (BLEU tokenize="zh")

# CJK ideographs (+ extensions, compatibility), kana: scored one character at a time
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_TOKEN = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
_LETTER = re.compile(r"[^\W\d_]")


class CJKTokenizer:
    """rouge-score's tokenizer interface (``tokenize(text) -> list[str]``): CJK characters one by
    one, runs of other letters and digits as words, lowercased, punctuation dropped."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


def cjk_share(texts: list[str]) -> float:
    """Share of letters (digits, spaces and punctuation left out) that are CJK characters."""
    letters = cjk = 0
    for t in texts:
        letters += len(_LETTER.findall(t))
        cjk += len(_CJK_CHAR.findall(t))
    return cjk / letters if letters else 0.0


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure per example on ``CJKTokenizer`` tokens (no stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=CJKTokenizer())
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


def exact_match(prediction: str, reference: str) -> bool:
    return prediction.strip() == reference.strip()


def text_scores(predictions: list[str], references: list[str], *, bleu_tokenize: str | None = None) -> dict:
    """Corpus scores of ``predictions`` against one reference each. ``bleu_tokenize``: sacrebleu's
    tokenizer for BLEU (default: ``zh`` or ``13a`` by the references' share of CJK letters)."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return {"examples": 0}
    share = cjk_share(references)
    tokenize = bleu_tokenize or ("zh" if share >= CJK_BLEU_SHARE else "13a")
    rl = rouge_l(predictions, references)
    bleu = BLEU(tokenize=tokenize)
    chrf = CHRF()
    return {
        "examples": len(references),
        "rouge_l": sum(rl) / len(rl),
        "chrf": chrf.corpus_score(predictions, [references]).score,
        "bleu": bleu.corpus_score(predictions, [references]).score,
        "exact_match": sum(exact_match(p, r) for p, r in zip(predictions, references)) / len(references),
        "cjk_share": round(share, 4),
        "bleu_tokenize": tokenize,
        "signatures": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature()), "rouge_l": "rouge-score rougeL F1, CJKTokenizer (CJK characters, lowercased Latin words), no stemming"},
    }
