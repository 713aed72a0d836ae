"""The license engine: classification, combination rules, and refusal before any download."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.audit.licenses import assess, check, classify, license_table, share_alike_targets
from pipeline.common.errors import LicenseError, ManifestError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from tests.conftest import REPO, run_cli
from tests.support.mirror import MirrorServer

DOCS = "".join(json.dumps({"id": i, "text": f"第{i}篇文档的正文。"}, ensure_ascii=False) + "\n" for i in range(3))
JUSTIFICATION = "Written permission from the corpus owners (email of 2024-05-02, archived in legal/acme.pdf) allows research use only."


def write_manifest(tmp_path: Path, sources: list[str], stages: str = "  - {name: merge, stage: concat}\n", top: str = "") -> Path:
    """Sources are YAML flow mappings without name/kind/paths: each reads the tiny local jsonl."""
    (tmp_path / "docs.jsonl").write_text(DOCS, encoding="utf-8")
    lines = [f"  - {{name: s{i}, kind: local, paths: [docs.jsonl], id_field: id, {body}}}" for i, body in enumerate(sources)]
    text = f"name: lic\n{top}sources:\n" + "\n".join(lines) + "\n" + (f"stages:\n{stages}" if stages else "")
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def assessed(tmp_path: Path, *licenses: str, **kw):
    return assess(load_manifest(write_manifest(tmp_path, [f"license: '{lic}'" for lic in licenses], **kw)))


def rules(result) -> list[str]:
    return [c["rule"] for c in result.conflicts]


# ---------------------------------------------------------------------------------------------
# classify


def test_classify_reads_each_license_of_an_expression():
    classes = {c.id: c for c in classify("(MIT OR GPL-3.0+) AND CC-BY-NC-SA-4.0 AND LicenseRef-acme AND GFDL-1.3")}
    assert set(classes) == {"MIT", "GPL-3.0-or-later", "CC-BY-NC-SA-4.0", "LicenseRef-acme", "GFDL-1.3-only"}
    assert classes["MIT"].attribution and classes["MIT"].share_alike is None and classes["MIT"].use == "commercial"
    nc_sa = classes["CC-BY-NC-SA-4.0"]
    assert (nc_sa.use, nc_sa.share_alike, nc_sa.version, nc_sa.no_derivatives) == ("non-commercial", "CC-BY-NC-SA", "4.0", False)
    assert nc_sa.url == "https://creativecommons.org/licenses/by-nc-sa/4.0/" and "NonCommercial-ShareAlike" in nc_sa.name
    assert classes["GFDL-1.3-only"].share_alike == "GFDL" and classes["GPL-3.0-or-later"].share_alike == "GPL"
    assert not classes["LicenseRef-acme"].known and classes["LicenseRef-acme"].use == "unknown"


def test_table_covers_the_families():
    table = license_table()
    for lid in ["CC0-1.0", "PDDL-1.0", "CC-BY-2.5", "CC-BY-SA-1.0", "CC-BY-SA-3.0-IGO", "CC-BY-NC-3.0", "CC-BY-ND-4.0",
                "CC-BY-NC-ND-2.0", "GFDL-1.2-invariants-or-later", "ODC-By-1.0", "ODbL-1.0", "BSD-2-Clause", "Apache-2.0",
                "GPL-2.0-only", "LGPL-2.1-or-later", "MPL-2.0", "CDLA-Permissive-2.0", "CDLA-Sharing-1.0", "Unlicense"]:
        assert lid in table, lid
    assert table["CC-BY-NC-ND-4.0"].no_derivatives and table["CC-BY-NC-ND-4.0"].use == "non-commercial"
    assert table["GFDL-1.2-invariants-or-later"].no_derivatives and not table["GFDL-1.2-no-invariants-or-later"].no_derivatives
    assert not table["CC0-1.0"].attribution and not table["PDDL-1.0"].attribution
    assert table["ODbL-1.0"].share_alike == "ODbL" and table["CDLA-Sharing-1.0"].share_alike == "CDLA-Sharing"
    assert table["LicenseRef-scancode-bigscience-open-rail-m"].use_restrictions


def test_share_alike_upgrade_paths():
    table = license_table()
    assert {"CC-BY-SA-2.5", "CC-BY-SA-3.0", "CC-BY-SA-4.0"} <= share_alike_targets(table["CC-BY-SA-2.0"])
    assert share_alike_targets(table["CC-BY-SA-1.0"]) == {"CC-BY-SA-1.0"}  # 1.0 has no later-version clause
    assert "CC-BY-SA-3.0" not in share_alike_targets(table["CC-BY-SA-4.0"])  # one way only
    assert "GPL-3.0-only" in share_alike_targets(table["CC-BY-SA-4.0"])
    assert not {t for t in share_alike_targets(table["CC-BY-SA-3.0"]) if t.startswith("GFDL")}
    assert not {t for t in share_alike_targets(table["GFDL-1.3-or-later"]) if t.startswith("CC-")}


def test_bad_expression_is_a_license_error():
    with pytest.raises(LicenseError) as info:
        classify("MIT AND")
    assert "MIT AND" in str(info.value) and "SPDX" in str(info.value)


# ---------------------------------------------------------------------------------------------
# assess: accepted combinations


def test_by_sa_versions_upgrade_to_the_newest(tmp_path):
    res = assessed(tmp_path, "CC-BY-SA-3.0", "CC-BY-SA-4.0")
    assert res.ok and res.output_license == "CC-BY-SA-4.0" and res.share_alike == "CC-BY-SA-4.0" and res.use == "commercial"
    assert any("s0: CC-BY-SA-3.0 material is adapted under CC-BY-SA-4.0" in o for o in res.obligations)


def test_permissive_sources_accumulate_attribution(tmp_path):
    path = write_manifest(tmp_path, ["license: CC-BY-4.0, attribution: 'Example Corpus by ACME Lab'", "license: CC0-1.0"])
    res = assess(load_manifest(path))
    assert res.ok and res.share_alike is None and res.output_license == "CC-BY-4.0 AND CC0-1.0"
    assert [a["source"] for a in res.attribution] == ["s0"] and res.attribution[0]["notice"] == "Example Corpus by ACME Lab"
    assert res.attribution[0]["license_url"] == "https://creativecommons.org/licenses/by/4.0/"
    assert any(o.startswith("attribution: s0: Example Corpus by ACME Lab") for o in res.obligations)
    assert any("keep their notices" in o for o in res.obligations)
    json.dumps(res.to_dict())


def test_or_picks_the_most_permissive_compatible_option(tmp_path):
    res = assessed(tmp_path, "MIT OR GPL-3.0-or-later", "CC-BY-SA-4.0")
    assert res.ok and res.sources["s0"]["chosen"] == "MIT" and res.output_license == "CC-BY-SA-4.0"
    assert "GPL-3.0-or-later would add a share-alike license and make the output GPL-3.0-only" in res.sources["s0"]["choice"]
    # GFDL would conflict with BY-SA 4.0; the 3.0 option joins it
    res = assessed(tmp_path, "GFDL-1.3-only OR CC-BY-SA-3.0", "CC-BY-SA-4.0")
    assert res.ok and res.sources["s0"]["chosen"] == "CC-BY-SA-3.0"
    assert "GFDL-1.3-only would conflict (share-alike-incompatible)" in res.sources["s0"]["choice"]


def test_by_sa_4_goes_one_way_into_gplv3(tmp_path):
    res = assessed(tmp_path, "CC-BY-SA-4.0", "GPL-3.0-or-later")
    assert res.ok and res.output_license == "GPL-3.0-only"
    assert rules(assessed(tmp_path, "CC-BY-SA-3.0-DE", "GPL-2.0-only")) == ["share-alike-incompatible"]


def test_apache_cannot_enter_gplv2(tmp_path):
    assert assessed(tmp_path, "Apache-2.0", "GPL-2.0-or-later").output_license == "GPL-3.0-or-later"
    res = assessed(tmp_path, "Apache-2.0", "GPL-2.0-only")
    assert rules(res) == ["share-alike-incompatible"] and "Apache-2.0" in res.conflicts[0]["message"]


def test_nc_sa_family(tmp_path):
    res = assessed(tmp_path, "CC-BY-NC-SA-4.0", "CC-BY-NC-4.0")
    assert res.ok and res.output_license == "CC-BY-NC-SA-4.0" and res.use == "non-commercial"
    assert any(o.startswith("use: non-commercial only") for o in res.obligations)
    res = assessed(tmp_path, "CC-BY-NC-SA-4.0", "CC-BY-SA-4.0")
    assert rules(res) == ["share-alike-incompatible"] and "different share-alike licenses" in res.conflicts[0]["message"]


def test_no_derivatives_source_may_pass_verbatim(tmp_path):
    res = assessed(tmp_path, "CC-BY-ND-4.0")
    assert res.ok and res.output_license == "CC-BY-ND-4.0"
    assert any("redistributed verbatim" in o for o in res.obligations)
    res = assessed(tmp_path, "CC-BY-ND-4.0", stages="  - {name: clean, stage: clean}\n")
    assert rules(res) == ["no-derivatives"] and "stage 'clean' (clean) transforms or filters it" in res.conflicts[0]["message"]


# ---------------------------------------------------------------------------------------------
# assess: refused combinations and overrides


def test_by_sa_with_nc_is_an_added_restriction(tmp_path):
    res = assessed(tmp_path, "CC-BY-SA-4.0", "CC-BY-NC-4.0")
    assert rules(res) == ["share-alike-added-restriction"] and res.conflicts[0]["sources"] == ["s1", "s0"]
    assert "restricts use to non-commercial" in res.conflicts[0]["message"]


def test_use_restrictions_and_invariant_sections(tmp_path):
    res = assessed(tmp_path, "CC-BY-SA-4.0", "LicenseRef-scancode-bigscience-open-rail-m")
    assert rules(res) == ["share-alike-added-restriction"] and "adds use-based restrictions" in res.conflicts[0]["message"]
    res = assessed(tmp_path, "CC-BY-4.0", "LicenseRef-scancode-bigscience-open-rail-m")
    assert res.ok and any("use-based restrictions must be passed on" in o for o in res.obligations)
    res = assessed(tmp_path, "GFDL-1.3-invariants-or-later", "GFDL-1.2-or-later")
    assert rules(res) == ["no-derivatives"]
    res = assessed(tmp_path, "GFDL-1.3-no-invariants-or-later", "GFDL-1.2-or-later")
    assert res.ok and res.output_license == "GFDL-1.3-or-later"


def test_gfdl_only_text_cannot_join_by_sa(tmp_path):
    for gfdl in ("GFDL-1.3-only", "GFDL-1.2-or-later"):
        res = assessed(tmp_path, "CC-BY-SA-4.0", gfdl)
        assert rules(res) == ["share-alike-incompatible"], gfdl
        assert "2009-08-01" in res.conflicts[0]["message"] and set(res.conflicts[0]["sources"]) == {"s0", "s1"}


def test_by_sa_1_0_cannot_be_upgraded(tmp_path):
    res = assessed(tmp_path, "CC-BY-SA-1.0", "CC-BY-SA-4.0")
    assert rules(res) == ["share-alike-incompatible"] and "1.0 has no later-version clause" in res.conflicts[0]["message"]


def test_intended_use(tmp_path):
    assert rules(assessed(tmp_path, "CC-BY-NC-4.0", top="intended_use: commercial\n")) == ["intended-use"]
    assert assessed(tmp_path, "CC-BY-NC-4.0", top="intended_use: non-commercial\n").ok
    res = assessed(tmp_path, "CC-BY-4.0", top="intended_use: commercial\n")
    assert res.ok and res.intended_use == "commercial"
    with pytest.raises(ManifestError) as info:
        assessed(tmp_path, "MIT", top="intended_use: profit\n")
    assert "intended_use" in str(info.value)


def override(use: str, justification: str = JUSTIFICATION, extra: str = "") -> str:
    return f"license: LicenseRef-acme-research, license_override: {{use: {use}, justification: '{justification}'{extra}}}"


def test_unknown_license_needs_an_override(tmp_path):
    res = assessed(tmp_path, "LicenseRef-acme-research", "CC0-1.0")
    assert rules(res) == ["unknown-license"] and res.use == "unknown"
    assert "LicenseRef-acme-research" in res.conflicts[0]["message"] and "license_override" in res.conflicts[0]["message"]
    res = assess(load_manifest(write_manifest(tmp_path, [override("academic-only"), "license: CC0-1.0"], top="intended_use: research\n")))
    assert res.ok and res.use == "academic-only"
    assert res.overrides == [
        {"source": "s0", "license": "LicenseRef-acme-research", "ids": ["LicenseRef-acme-research"], "use": "academic-only",
         "attribution": True, "share_alike": None, "no_derivatives": False, "name": None, "url": None, "justification": JUSTIFICATION}
    ]
    assert any(JUSTIFICATION in o for o in res.obligations)
    # the override's use is checked like any other license
    res = assess(load_manifest(write_manifest(tmp_path, [override("academic-only")], top="intended_use: commercial\n")))
    assert rules(res) == ["intended-use"]
    res = assess(load_manifest(write_manifest(tmp_path, [override("non-commercial"), "license: CC-BY-SA-4.0"])))
    assert rules(res) == ["share-alike-added-restriction"]


def test_override_needs_a_real_justification(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(tmp_path, [override("commercial", justification="ok")]))
    assert "sources[0].license_override.justification" in str(info.value) and "20 characters" in str(info.value)
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(tmp_path, ["license: LicenseRef-x, license_override: {use: commercial}"]))
    assert "justification" in str(info.value) and "Field required" in str(info.value)


def test_override_on_a_known_license_is_refused(tmp_path):
    body = f"license: CC-BY-NC-4.0, license_override: {{use: commercial, justification: '{JUSTIFICATION}'}}"
    res = assess(load_manifest(write_manifest(tmp_path, [body])))
    assert rules(res) == ["override-not-applicable"]


def test_check_raises_with_every_conflict(tmp_path):
    m = load_manifest(write_manifest(tmp_path, ["license: CC-BY-SA-4.0", "license: CC-BY-ND-4.0", "license: LicenseRef-foo"]))
    with pytest.raises(LicenseError) as info:
        check(m)
    assert [c["rule"] for c in info.value.conflicts] == ["unknown-license", "no-derivatives"]
    msg = str(info.value)
    assert str(m.path) in msg and "no-derivatives: cannot be filtered or mixed" in msg and "'s2' (LicenseRef-foo)" not in msg
    assert "LicenseRef-foo" in msg and "nothing was downloaded" in msg
    assert pickle.loads(pickle.dumps(info.value)).conflicts == info.value.conflicts


def test_flagship_manifest_passes():
    res = check(load_manifest(REPO / "manifests" / "wiki-zh.yaml"))
    assert res.output_license == "CC-BY-SA-4.0" and res.use == "commercial"
    assert res.attribution[0]["source"] == "zhwiki" and "Wikipedia contributors" in res.attribution[0]["notice"]


def test_python_api_refuses_before_resolving(tmp_path):
    m = load_manifest(write_manifest(tmp_path, ["license: CC-BY-SA-4.0", "license: CC-BY-NC-4.0"]))
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex, pytest.raises(LicenseError):
        run_manifest(m, tmp_path / "out", ex, console, progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Through the real CLI: refused before any download


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "web.jsonl").write_text(DOCS, encoding="utf-8")
    with MirrorServer(root) as server:
        yield server


def mixed(tmp_path: Path, mirror: MirrorServer, web_license: str, local_license: str = "CC-BY-SA-4.0", top: str = "") -> Path:
    """A local source and an http source on the loopback mirror, merged by concat."""
    (tmp_path / "docs.jsonl").write_text(DOCS, encoding="utf-8")
    digest = hashlib.sha256(DOCS.encode()).hexdigest()
    text = (
        f"name: mix\n{top}cache_dir: cache\nsources:\n"
        f"  - {{name: wiki, kind: local, paths: [docs.jsonl], id_field: id, license: '{local_license}'}}\n"
        f"  - {{name: web, kind: http, url: '{mirror.url}/web.jsonl', sha256: {digest}, id_field: id, license: '{web_license}'}}\n"
        "stages:\n  - {name: merge, stage: concat}\n"
    )
    path = tmp_path / "mix.yaml"
    path.write_text(text, encoding="utf-8")
    return path


REFUSED = [
    ("CC-BY-NC-4.0", "share-alike-added-restriction", "restricts use to non-commercial"),
    ("CC-BY-ND-4.0", "no-derivatives", "no-derivatives: cannot be filtered or mixed"),
    ("LicenseRef-foo", "unknown-license", "add license_override"),
    ("GFDL-1.3-only", "share-alike-incompatible", "relicensing of wiki content, closed on 2009-08-01"),
]


@pytest.mark.parametrize("web_license,rule,phrase", REFUSED, ids=[r[0] for r in REFUSED])
def test_cli_refuses_mixes_before_any_download(tmp_path, mirror, web_license, rule, phrase):
    manifest = mixed(tmp_path, mirror, web_license)
    mirror.reset_log()
    out = tmp_path / "out"
    ran = run_cli("run", str(manifest), "--out", str(out), "--no-progress")
    assert ran.returncode != 0, ran.stderr
    flat = " ".join(ran.stderr.split())
    assert f"[{rule}]" in flat and phrase in flat and "'web'" in flat and web_license in flat, flat
    assert mirror.requests == [] and not out.exists() and not (tmp_path / "cache").exists()
    checked = run_cli("validate", str(manifest))
    assert checked.returncode != 0 and f"[{rule}]" in " ".join(checked.stderr.split())
    assert mirror.requests == []


def test_cli_accepts_by_sa_versions_and_downloads(tmp_path, mirror):
    manifest = mixed(tmp_path, mirror, "CC-BY-SA-3.0")
    mirror.reset_log()
    ran = run_cli("run", str(manifest), "--out", str(tmp_path / "out"), "--no-progress", "--workers", "1")
    assert ran.returncode == 0, ran.stderr
    assert "license: output CC-BY-SA-4.0" in ran.stderr
    assert [r["path"] for r in mirror.requests if r["method"] == "GET"] == ["/web.jsonl"]  # accepted: the source is fetched
    assert (tmp_path / "out" / "data" / "state.json").exists()


def test_cli_validate_prints_override_and_obligations(tmp_path, mirror):
    manifest = mixed(tmp_path, mirror, "LicenseRef-foo", local_license="CC-BY-4.0")
    text = manifest.read_text().replace(
        "license: 'LicenseRef-foo'}", f"license: 'LicenseRef-foo', license_override: {{use: non-commercial, justification: '{JUSTIFICATION}'}}}}"
    )
    manifest.write_text(text, encoding="utf-8")
    mirror.reset_log()
    checked = run_cli("validate", str(manifest), "--json")
    assert checked.returncode == 0, checked.stderr
    lic = json.loads(checked.stdout)["license"]
    assert lic["use"] == "non-commercial" and lic["output_license"] == "CC-BY-4.0 AND LicenseRef-foo"
    assert lic["overrides"][0]["justification"] == JUSTIFICATION and lic["conflicts"] == []
    flat = " ".join(checked.stderr.split())
    assert "license: output CC-BY-4.0 AND LicenseRef-foo; use: non-commercial" in flat and JUSTIFICATION in flat
    assert mirror.requests == []


def test_cli_intended_use_commercial_refuses_nc(tmp_path, mirror):
    manifest = mixed(tmp_path, mirror, "CC-BY-NC-4.0", local_license="CC-BY-4.0", top="intended_use: commercial\n")
    checked = run_cli("validate", str(manifest), "--json")
    assert checked.returncode != 0
    assert [c["rule"] for c in json.loads(checked.stdout)["license"]["conflicts"]] == ["intended-use"]
    flat = " ".join(checked.stderr.split())
    assert "[intended-use]" in flat and "intended_use: commercial" in flat and "'web' (CC-BY-NC-4.0) allows non-commercial use only" in flat


# ---------------------------------------------------------------------------------------------
# crawled web text (issue 13): the pages are their owners' copyright, never silently licensed


def test_crawled_text_is_not_licensed_and_says_what_that_means(tmp_path):
    cc = "LicenseRef-CommonCrawl-ToU"
    web = assessed(tmp_path, cc, top="intended_use: commercial\n")
    assert web.ok and web.output_license == cc and web.use == "unknown"  # no conflict: a note, not a refusal
    text = "\n".join(web.obligations)
    assert "remain the copyright of their owners" in text and "https://commoncrawl.org/terms-of-use" in text
    assert "attribution by URL" in text and "removal requests" in text and "declared intended use (commercial)" in text
    assert "licensed under" not in " ".join(a["notice"] for a in web.attribution)
    mixed = assessed(tmp_path, "CC-BY-SA-4.0 AND CC-BY-SA-3.0", cc)
    assert mixed.ok, mixed.conflicts  # share-alike does not reach documents nobody licenses
    assert mixed.output_license == f"CC-BY-SA-4.0 AND {cc}" and mixed.share_alike == "CC-BY-SA-4.0"
    text = "\n".join(mixed.obligations)
    assert "distribute the documents that come from s0, and adaptations of them, under CC-BY-SA-4.0" in text
    assert "the documents of s1 are not under CC-BY-SA-4.0" in text
    # a non-commercial licensed source beside crawled text still limits the licensed documents' use
    nc = assessed(tmp_path, "CC-BY-NC-4.0", cc)
    assert nc.ok and "the licensed documents allow non-commercial use" in "\n".join(nc.obligations)
