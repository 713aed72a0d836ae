"""The clean stage: ftfy, normalization, whitespace, boilerplate lines, OpenCC, PII; and `pipeline inspect`."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from stages.clean import Clean, Params
from tests.conftest import run_cli


def table(*texts: str) -> pa.Table:
    n = len(texts)
    return pa.table({"id": [f"d{i}" for i in range(n)], "source": ["s"] * n, "title": [None] * n, "text": list(texts)})


def clean(texts, **params):
    kept, removed, stats = Clean(Params(**params), "clean").process(table(*texts))
    return kept["text"].to_pylist(), removed, stats["clean"]


def test_mojibake_is_repaired_and_chinese_punctuation_kept():
    out, _, stats = clean(["The cafÃ© serves crÃ¨me brÃ»lÃ©e.", "北京，中国的首都。“引号”保留。"])
    assert out[0] == "The café serves crème brûlée."
    assert out[1] == "北京，中国的首都。“引号”保留。"  # full-width punctuation and curly quotes untouched
    assert stats["ftfy_changed"] == 1


@pytest.mark.parametrize(
    "broken,fixed",
    [
        ("â€œquotedâ€\x9d text", "“quoted” text"),
        ("ç»\x8fæµ\x8eå\xad¦", "经济学"),  # Chinese UTF-8 decoded as Latin-1
        ("Fish &amp; chips", "Fish & chips"),
    ],
)
def test_typical_mojibake_is_caught_by_the_prefilter(broken, fixed):
    assert clean([broken])[0] == [fixed]


def test_normalization_is_configurable():
    assert clean(["ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ"], normalization="NFKC")[0] == ["full-width ABC"]
    assert clean(["ｆｕｌｌ"], normalization="NFC")[0] == ["ｆｕｌｌ"]
    assert clean(["e\u0301"])[0] == ["é"]  # NFC by default composes


def test_whitespace_and_control_characters():
    out, _, _ = clean(["a\r\nb\x00c\u200b d  \t e \n\n\n\nf\u3000g  "], whitespace="collapse")
    assert out == ["a\nbc d e\n\nf g"]


def test_conservative_whitespace_keeps_sentences_verbatim():
    text = "公元\t年号\t\t皇帝\n保密协议、\xa0产品激活  加密狗。 \r\n\n\n\n下一段。\x00"
    out, _, _ = clean([text])
    assert out == ["公元\t年号\t\t皇帝\n保密协议、\xa0产品激活  加密狗。\n\n下一段。"]


def test_boilerplate_lines_removed_and_empty_docs_go_to_ledger():
    out, removed, stats = clean(["正文第一句。\n本条目是一篇小作品。你可以通过编辑或修订扩充其内容。\n----\n[编辑]\n正文第二句。", "----\n***"])
    assert out == ["正文第一句。\n正文第二句。"]
    assert removed.num_rows == 1 and removed["reason"].to_pylist() == ["clean:empty"] and removed["id"].to_pylist() == ["d1"]
    assert stats["boilerplate_chars_removed"] > 0


def test_opencc_t2s_and_provenance():
    stage = Clean(Params(opencc="t2s"), "clean")
    kept, _, stats = stage.process(table("經濟學是一門研究產品與服務的社會科學。", "简体不变。"))
    assert kept["text"].to_pylist() == ["经济学是一门研究产品与服务的社会科学。", "简体不变。"]
    assert stats["clean"]["opencc_changed"] == 1
    assert stage.provenance()["opencc"]["config"] == "t2s"


@pytest.mark.parametrize(
    "text,kind,expected",
    [
        ("邮箱 zhang.san@example.com.cn 联系", "email", "邮箱 <EMAIL> 联系"),
        ("手机13812345678，或+86 138 1234 5678。", "phone", "手机<PHONE>，或<PHONE>。"),
        ("座机 010-12345678 转", "phone", "座机 <PHONE> 转"),
        ("call (555) 123-4567 now", "phone", "call <PHONE> now"),
        ("身份证号11010519491231002X。", "cn_id", "身份证号<CN_ID>。"),
        ("server 192.168.1.10 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ip", "server <IP> and <IP>"),
    ],
)
def test_pii_redaction_per_type(text, kind, expected):
    out, _, stats = clean([text], pii=True)
    assert out == [expected]
    assert stats[f"pii_{kind}"] >= 1


def test_pii_leaves_ordinary_numbers_alone():
    text = "1949年10月1日，人口约5.4亿，面积960万平方公里，版本3.11.7。"
    assert clean([text], pii=True)[0] == [text]
    assert clean(["a@b"], pii=False)[0] == ["a@b"]


def test_inspect_lists_reasons_and_samples(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in ["保留的文档。", "----", "{broken"]) + "\n{oops\n", encoding="utf-8")
    m = tmp_path / "m.yaml"
    m.write_text(f"name: t\nsources:\n  - {{name: s, kind: local, paths: ['{data}'], license: CC0-1.0}}\nstages:\n  - {{name: clean, stage: clean}}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert run_cli("run", str(m), "--out", str(out), env={"GRIST_CACHE": str(tmp_path / "c")}).returncode == 0
    proc = run_cli("inspect", str(out), "--reason", "clean:")
    assert proc.returncode == 0, proc.stderr
    assert "clean:empty" in proc.stdout and "parse:invalid-json" in proc.stdout and "s/d.jsonl:1" in proc.stdout
    bad = run_cli("inspect", str(tmp_path))
    assert bad.returncode == 2 and "not the output" in bad.stderr
