"""Stage ``clean``: repair and normalize text without changing what it says.

Order: ftfy (mojibake, broken Unicode) -> Unicode normalization -> whitespace and control
characters -> leftover boilerplate lines -> OpenCC script conversion (e.g. ``t2s``) ->
optional PII redaction. Everything but ftfy and OpenCC is a vectorized Arrow expression;
ftfy only sees documents that contain a character mojibake is made of.

Defaults are conservative for Chinese: NFC (NFKC would turn full-width ``，`` into ``,``:
the dedup stage applies NFKC to its key instead), curly quotes kept, full-width kept.
Documents that end up empty go to the ledger as ``clean:empty``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.core.stage import MapStage, removed_rows

# UTF-8 read as Latin-1/cp1252 shows a lead byte (Â Ã … ô) followed by a continuation-byte
# character; plus replacement characters, C1 controls, escapes and HTML entities. Only documents
# matching this go through ftfy (the slow part), the rest are already fine.
_CP1252_CONT = r"\x{80}-\x{bf}\x{152}\x{153}\x{160}\x{161}\x{178}\x{17d}\x{17e}\x{192}\x{2c6}\x{2dc}\x{2013}\x{2014}\x{2018}-\x{201e}\x{2020}-\x{2022}\x{2026}\x{2030}\x{2039}\x{203a}\x{20ac}\x{2122}"
MOJIBAKE_HINT = rf"[\x{{c2}}-\x{{f4}}][{_CP1252_CONT}]|[\x{{80}}-\x{{9f}}\x{{fffd}}\x{{1b}}]|&(?:[a-zA-Z]{{2,8}}|#\d{{2,6}}|#x[0-9a-fA-F]{{2,5}});"

# "conservative" (default) never touches spaces inside a line, so sentences stay verbatim
# (tab-separated timelines, non-breaking spaces in names); "collapse" also folds exotic spaces
# and runs of spaces, for web text.
WHITESPACE_RULES = {
    "conservative": [
        (r"\r\n?", "\n"),
        (r"[\x{00}-\x{08}\x{0b}\x{0c}\x{0e}-\x{1f}\x{7f}]", ""),  # control characters (keeps \t \n)
        (r"[\x{200b}\x{200c}\x{2060}\x{feff}]", ""),  # zero-width characters (ZWJ kept: emoji)
        (r"(?m)[ \t]+$", ""),  # trailing whitespace
        (r"\n{3,}", "\n\n"),
    ],
}
WHITESPACE_RULES["collapse"] = WHITESPACE_RULES["conservative"][:3] + [
    (r"[\t\x{a0}\x{2000}-\x{200a}\x{202f}\x{205f}\x{3000}]", " "),  # exotic spaces
    (r" {2,}", " "),
    (r"(?m)^ +| +$", ""),
    (r"\n{3,}", "\n\n"),
]

# Lines that are page furniture, not content (matched as whole lines, case-insensitive).
DEFAULT_BOILERPLATE = [
    r"[\p{P}\p{S}\s]+",  # lines of only punctuation / symbols
    r"(?i)retrieved from .*",
    r"(?i)this article is a stub.*",
    r"(?i)(all rights reserved|copyright ©).*",
    r"(?i)(cookie|cookies) (policy|settings|preferences).*",
    r"(?i)jump to (navigation|search).*",
    r"本条目是一[篇个].*(小作品|小条目).*",
    r"本條目是一[篇個].*(小作品|小條目).*",
    r"(版权所有|版權所有|保留所有权利|保留所有權利).*",
    r"\[?(编辑|編輯|edit)\]?",
]

# C4's line filters (Raffel et al. 2020, section 2.2; datatrove C4QualityFilter), opt-in for web
# text. A line is kept only if it ends in terminal punctuation: ASCII . ! ? " ' and the Chinese /
# full-width 。！？… -- for Chinese also followed by closing brackets or quotes (。）, 。」, ！”),
# which C4 (English only) did not need. Of those, a line is still removed when it ends in "...",
# has fewer than 3 whitespace-separated words and no Han character, or mentions javascript or a
# cookie/privacy/terms-of-use notice (C4's phrases plus their usual Chinese forms). C4's
# document-level rules (lorem ipsum, curly braces, at least 5 sentences) are quality signals
# (q_c4_*), not line edits.
C4_TERMINAL_LINE = r"[^\n]*[.!?\"'\x{3002}\x{ff01}\x{ff1f}\x{2026}][)\]\x{ff09}\x{300d}\x{300f}\x{201d}\x{2019}\x{300b}\x{3011}\"']*[ \t]*"
C4_LINE_PATTERNS = [
    r"[^\n]*\.\.\.[ \t]*",
    r"[ \t]*[^\s\p{Han}]+(?:[ \t]+[^\s\p{Han}]+)?[ \t]*",  # fewer than 3 words, no Han
    r"(?i)[^\n]*(?:javascript|terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies|隐私政策|隱私政策|使用条款|使用條款|用户协议)[^\n]*",
]
_C4_MARK = "\x01"  # marks the lines with terminal punctuation between two passes


PII_PATTERNS: dict[str, tuple[str, str]] = {
    # type: (RE2 pattern, replacement). Order matters: ID numbers before phone numbers.
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "<EMAIL>"),
    "cn_id": (r"\b[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]\b", "<CN_ID>"),
    "ip": (r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b", "<IP>"),
    "phone": (
        r"(?:\+?86[ -]?)?\b1[3-9]\d[ -]?\d{4}[ -]?\d{4}\b"  # mainland mobile, optionally +86 and grouped 3-4-4
        r"|\b0\d{2,3}-\d{7,8}\b"  # mainland landline with area code
        r"|\+\d{1,3}[ -]?\(?\d{1,4}\)?(?:[ -]?\d{2,4}){2,4}\b"  # international
        r"|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b",  # North American
        "<PHONE>",
    ),
}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fix_unicode: bool = Field(True, description="repair mojibake and broken Unicode with ftfy")
    normalization: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = "NFC"
    whitespace: Literal["conservative", "collapse", "none"] = Field(
        "conservative", description="conservative: line endings, control and zero-width characters, trailing spaces, blank-line runs; collapse: also folds spaces inside lines"
    )
    boilerplate: bool = True
    boilerplate_patterns: list[str] | None = Field(None, description="whole-line RE2 patterns (default: DEFAULT_BOILERPLATE)")
    opencc: str | None = Field(None, description="OpenCC config, e.g. t2s, tw2s, hk2s (None: no conversion)")
    pii: bool = False
    pii_types: list[Literal["email", "phone", "ip", "cn_id"]] = Field(default_factory=lambda: ["email", "phone", "ip", "cn_id"])
    min_chars: int = Field(1, ge=0)
    c4_lines: bool = Field(False, description="web text: remove lines as C4 did (no terminal punctuation incl. 。！？, < 3 words, javascript, cookie/privacy notices); see C4_LINE_PATTERNS")

    @field_validator("opencc")
    @classmethod
    def _known_opencc_config(cls, value: str | None) -> str | None:
        import opencc

        known = sorted(c.removesuffix(".json") for c in getattr(opencc, "CONFIGS", []))
        if value is not None and known and value.removesuffix(".json") not in known:
            raise ValueError(f"unknown OpenCC config {value!r}; known: {', '.join(known)}")
        return value


class Clean(MapStage):
    name = "clean"
    version = "1"
    Params = Params

    @cached_property
    def _opencc(self):
        import opencc

        config = self.params.opencc
        return opencc.OpenCC(config if config.endswith(".json") else f"{config}.json")

    @cached_property
    def _ftfy_config(self):
        from ftfy import TextFixerConfig

        return TextFixerConfig(uncurl_quotes=False, fix_character_width=False, fix_latin_ligatures=False, normalization=None, explain=False)

    def provenance(self) -> dict:
        from importlib import metadata

        out = {"normalization": self.params.normalization, "pii": self.params.pii}
        if self.params.opencc:
            out["opencc"] = {"config": self.params.opencc, "package": "opencc", "version": metadata.version("opencc"), "license": "Apache-2.0"}
        if self.params.fix_unicode:
            out["ftfy"] = {"version": metadata.version("ftfy"), "config": "uncurl_quotes=False, fix_character_width=False, fix_latin_ligatures=False"}
        return out

    def process(self, table: pa.Table):
        p: Params = self.params
        text = table["text"].combine_chunks() if table.num_rows else pa.array([], pa.string())
        stats: dict[str, int] = {}
        if p.fix_unicode and len(text):
            text, stats["ftfy_changed"] = self._fix(text)
        if p.normalization != "none" and len(text):
            text = pc.utf8_normalize(text, p.normalization)
        if p.whitespace != "none":
            for pattern, repl in WHITESPACE_RULES[p.whitespace]:
                text = pc.replace_substring_regex(text, pattern, repl)
        if p.boilerplate:
            patterns = p.boilerplate_patterns if p.boilerplate_patterns is not None else DEFAULT_BOILERPLATE
            if patterns:
                line_re = "(?m)^(?:" + "|".join(f"(?:{x})" for x in patterns) + ")$\n?"
                before = pc.sum(pc.utf8_length(text)).as_py() or 0
                text = pc.replace_substring_regex(text, line_re, "")
                stats["boilerplate_chars_removed"] = before - (pc.sum(pc.utf8_length(text)).as_py() or 0)
        if p.c4_lines and len(text):
            text, stats["c4_lines_removed"], stats["c4_chars_removed"] = _c4_lines(text)
        if p.opencc and len(text):
            values = text.to_pylist()
            converted = [self._opencc.convert(t) if t else t for t in values]
            stats["opencc_changed"] = sum(a != b for a, b in zip(values, converted))
            text = pa.array(converted, pa.string())
        if p.pii:
            for kind in ("email", "cn_id", "ip", "phone"):
                if kind in p.pii_types:
                    pattern, repl = PII_PATTERNS[kind]
                    stats[f"pii_{kind}"] = int(pc.sum(pc.count_substring_regex(text, pattern)).as_py() or 0)
                    text = pc.replace_substring_regex(text, pattern, repl)
        if p.whitespace != "none" or p.boilerplate:
            text = pc.utf8_trim_whitespace(text)
        table = table.set_column(table.schema.get_field_index("text"), "text", text)
        keep = pc.greater_equal(pc.utf8_length(text), p.min_chars)
        dropped = table.filter(pc.invert(keep))
        removed = removed_rows(dropped, self.node, ["clean:empty"] * dropped.num_rows, [{"chars": 0}] * dropped.num_rows)
        return table.filter(keep), removed, {"clean": stats}

    def _fix(self, text: pa.Array) -> tuple[pa.Array, int]:
        import ftfy

        suspicious = pc.match_substring_regex(text, MOJIBAKE_HINT)
        if not pc.any(suspicious).as_py():
            return text, 0
        values = text.to_pylist()
        changed = 0
        for i, flag in enumerate(suspicious.to_pylist()):
            if flag and values[i]:
                fixed = ftfy.fix_text(values[i], config=self._ftfy_config)
                if fixed != values[i]:
                    values[i] = fixed
                    changed += 1
        return pa.array(values, pa.string()), changed


def _c4_lines(text: pa.Array) -> tuple[pa.Array, int, int]:
    """C4's line filters over the whole column: mark the lines that end in terminal punctuation,
    drop every unmarked non-blank line and the marked ones a C4 rule removes, unmark."""
    before = pc.sum(pc.utf8_length(text)).as_py() or 0
    had_mark = pc.any(pc.match_substring(text, _C4_MARK)).as_py()
    if had_mark:  # the marker must not occur in the text itself
        text = pc.replace_substring(text, _C4_MARK, "")
    text = pc.replace_substring_regex(text, f"(?m)^({C4_TERMINAL_LINE})$", _C4_MARK + "\\1")
    drop = f"(?m)^(?:[^{_C4_MARK}\\n][^\\n]*|{_C4_MARK}(?:" + "|".join(f"(?:{x})" for x in C4_LINE_PATTERNS) + "))$\\n?"
    lines = int(pc.sum(pc.count_substring_regex(text, drop)).as_py() or 0)
    text = pc.replace_substring(pc.replace_substring_regex(text, drop, ""), _C4_MARK, "")
    after = pc.sum(pc.utf8_length(text)).as_py() or 0
    return text, lines, before - after
