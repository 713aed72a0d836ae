"""Build a Common Crawl-shaped mirror for tests and benchmarks, and serve it on loopback.

:func:`build_ccmirror` lays out under ``root``, like ``https://data.commoncrawl.org``::

    collinfo.json                                     the crawl list, newest first (``id``)
    crawl-data/<crawl>/warc.paths.gz                  one WARC path per line
    crawl-data/<crawl>/wet.paths.gz                   the WET files, in the same order
    crawl-data/<crawl>/cc-index-table.paths.gz        the columnar index (Parquet), all subsets
    crawl-data/<crawl>/segments/<seg>/warc/CC-MAIN-...-00000.warc.gz
    crawl-data/<crawl>/segments/<seg>/wet/CC-MAIN-...-00000.warc.wet.gz
    cc-index/table/cc-main/warc/crawl=<crawl>/subset=warc/part-0000N-<uuid>.c000.gz.parquet

Every WARC record is its own gzip member, and each WARC file starts with a ``warcinfo``
record followed by ``request`` + ``response`` + ``metadata`` per capture, as in real Common
Crawl files. The pages are the real ones of ``shared/corpora/web`` (21 Chinese, 13 of them
GB2312/GBK bytes, and 64 English news pages) when that folder exists, synthetic HTML
otherwise, plus filler pages in other languages so that Chinese is a small share, and a few
non-documents: a PDF, a PNG image, a 301 redirect and a 404. The WET files hold one
``conversion`` record per HTML capture (the ground-truth text for the real pages).

The index has the real column names and types (``url_surtkey``, ``url``, ``url_host_name``,
``url_host_tld``, ``fetch_status``, ``content_mime_detected``, ``content_languages``,
``warc_filename``, ``warc_record_offset``, ``warc_record_length``, …), sorted by
``url_surtkey`` and cut into several row groups per file, so selections read only some of it.

:class:`CCMirrorServer` is :class:`tests.support.mirror.MirrorServer` plus throttling the way
Common Crawl's CDN does it: ``throttle[path] = (n, status, retry_after)`` answers the next
``n`` GETs of a path with ``status`` (429 or 503) and a ``Retry-After`` header.

Everything is deterministic for a given input and seed (file bytes included).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import re
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.mirror import MirrorServer, _Handler, _Server

__all__ = ["WebPage", "CCRecord", "CCFile", "CCInfo", "CCMirrorServer", "build_pages", "build_ccmirror", "gzip_member", "warc_record", "default_web_dir"]

CRAWL = "CC-MAIN-2024-33"
OLDER_CRAWLS = ("CC-MAIN-2024-30", "CC-MAIN-2024-26")
SEGMENTS = ("1722640353668.0", "1722640355174.5")
_EPOCH = datetime(2024, 8, 2, 23, 45, 8, tzinfo=timezone.utc)


def default_web_dir() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "web"


@dataclass
class WebPage:
    """One capture: what the server sent and what the index says about it."""

    url: str
    body: bytes
    content_type: str  # the HTTP Content-Type header as sent
    status: int = 200
    languages: str | None = None  # content_languages, ISO 639-3, comma-separated, primary first
    mime_detected: str = "text/html"
    charset: str | None = None  # content_charset (detected)
    text: str | None = None  # the WET text (None: no conversion record, e.g. images)
    location: str | None = None  # redirects
    key: str = ""  # the corpus id (real pages) or a synthetic name

    @property
    def lang(self) -> str | None:
        return self.languages.split(",")[0] if self.languages else None


@dataclass
class CCRecord:
    """One WARC record as written: where it is (compressed offset and length) and what it holds."""

    warc_type: str
    record_id: str  # the UUID inside <urn:uuid:...>
    url: str | None
    offset: int
    length: int
    date: str
    page: WebPage | None = None
    payload_digest: str | None = None
    http_payload: bytes | None = None  # response records: the body after the HTTP headers


@dataclass
class CCFile:
    path: str  # relative to the mirror root (as in warc.paths.gz)
    size: int
    records: list[CCRecord] = field(default_factory=list)
    wet_path: str = ""
    wet_size: int = 0
    wet_records: list[CCRecord] = field(default_factory=list)

    def responses(self) -> list[CCRecord]:
        return [r for r in self.records if r.warc_type == "response"]


@dataclass
class CCInfo:
    root: Path
    crawl: str
    files: list[CCFile]
    index_paths: list[str]  # subset=warc parts (those a selection reads)
    index_sizes: dict[str, int]
    crawls: list[str]  # collinfo.json ids, newest first

    def file(self, name: str) -> CCFile:
        return next(f for f in self.files if f.path.endswith(name))

    @property
    def warc_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def responses(self) -> list[CCRecord]:
        return [r for f in self.files for r in f.responses()]

    def selected(self, languages=("zho",), mimes=("text/html",), statuses=(200,)) -> list[tuple[CCFile, CCRecord]]:
        """The response records a selection by primary language must return, with their files."""
        out = []
        for f in self.files:
            for r in f.responses():
                p = r.page
                if p is not None and p.lang in languages and p.mime_detected in mimes and p.status in statuses:
                    out.append((f, r))
        return out


# ---- records --------------------------------------------------------------------------------


def _b32_sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def gzip_member(data: bytes, level: int = 6) -> bytes:
    """One gzip member (a deterministic header: no name, mtime 0)."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def warc_record(warc_type: str, headers: list[tuple[str, str]], block: bytes, *, content_length: int | None = None, version: str = "WARC/1.0") -> bytes:
    """A WARC record's bytes: version line, headers, Content-Length (the real one unless
    ``content_length`` says otherwise), blank line, block, CRLF CRLF."""
    lines = [version, f"WARC-Type: {warc_type}", *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(block) if content_length is None else content_length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + block + b"\r\n\r\n"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _http_date(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _reason(status: int) -> str:
    return {200: "OK", 301: "Moved Permanently", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Unknown")


def http_response(page: WebPage, when: datetime) -> tuple[bytes, bytes]:
    """(HTTP header block, body) as Common Crawl stores them: the payload decoded, the original
    transfer headers renamed X-Crawler-*."""
    headers = [f"HTTP/1.1 {page.status} {_reason(page.status)}", f"Date: {_http_date(when)}", "Server: nginx"]
    if page.content_type:
        headers.append(f"Content-Type: {page.content_type}")
    if page.location:
        headers.append(f"Location: {page.location}")
    headers += [f"X-Crawler-Content-Length: {len(page.body)}", f"Content-Length: {len(page.body)}"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"), page.body


def surt(url: str) -> str:
    """The SURT form the index sorts by: ``cn,com,example)/path?query``."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    key = ",".join(reversed(host.split("."))) + ")" + (parts.path or "/").lower()
    if parts.query:
        key += "?" + parts.query.lower()
    return key


# ---- pages ----------------------------------------------------------------------------------

_FILLER_WORDS = {
    "eng": "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they".split(),
    "deu": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden aus".split(),
    "fra": "de la le et les des en un du une que est pour qui dans par plus pas au sur se ne il ce avec".split(),
    "spa": "de la que el en y a los se del las un por con no una su para es al lo como más pero sus".split(),
    "rus": "и в не на я быть он с что а по это она этот к но они мы как из у который то за".split(),
    "jpn": "の に は を た が で て と し れ さ ある いる も する から な こと として い や れる など なっ".split(),
    "por": "de a o que e do da em um para é com não uma os no se na por mais as dos como mas".split(),
}
_FILLER_TLDS = {"eng": ["com", "org", "net", "uk", "us", "cn"], "deu": ["de", "at", "ch"], "fra": ["fr", "be"], "spa": ["es", "mx", "ar"], "rus": ["ru", "by"], "jpn": ["jp"], "por": ["br", "pt"]}
_ZH_CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"


def _filler_html(rng: random.Random, lang: str, title_words: int = 6, paragraphs: int = 12) -> str:
    words = _FILLER_WORDS[lang]
    sep = "" if lang == "jpn" else " "

    def sentence(n):
        return sep.join(rng.choice(words) for _ in range(n)) + ("。" if lang == "jpn" else ".")

    body = "\n".join(f"<p>{' '.join(sentence(rng.randint(8, 20)) for _ in range(rng.randint(3, 8)))}</p>" for _ in range(paragraphs))
    nav = "".join(f'<li><a href="/section/{i}">{sentence(2)}</a></li>' for i in range(8))
    title = sentence(title_words)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang[:2]}"><head><meta charset="utf-8"><title>{title}</title>'
        f'<script>var _t = {{"id": {rng.randint(1, 10**6)}}};</script></head>\n'
        f"<body><nav><ul>{nav}</ul></nav>\n<article><h1>{title}</h1>\n{body}\n</article>\n"
        f"<footer>© 2024 {sentence(3)}</footer></body></html>\n"
    )


def _synthetic_zh(rng: random.Random, n: int) -> list[tuple[str, bytes, str, str, str]]:
    """(key, body bytes, charset declared, url, text) for synthetic Chinese pages, some GBK."""
    out = []
    for i in range(n):
        paras = ["".join(rng.choice(_ZH_CHARS) for _ in range(rng.randint(40, 120))) + "。" for _ in range(rng.randint(6, 14))]
        title = "".join(rng.choice(_ZH_CHARS) for _ in range(10))
        gbk = i % 3 != 0
        charset = "gb2312" if gbk else "utf-8"
        html = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset={charset}"><title>{title}</title></head><body><div class="nav">首页 | 新闻 | 体育</div><div id="content"><h1>{title}</h1>' + "".join(f"<p>{p}</p>" for p in paras) + "</div><div class='footer'>版权所有</div></body></html>"
        body = html.encode("gb18030" if gbk else "utf-8")
        tld = ["cn", "com.cn", "tw", "hk", "com"][i % 5]
        out.append((f"synzh-{i:03d}", body, charset, f"http://news.site{i}.{tld}/a/{20240800 + i}.html", "\n".join(paras)))
    return out


def build_pages(web_dir: Path | None = None, *, filler: int = 480, seed: int = 0) -> list[WebPage]:
    """The captures of the mirror: the real pages (or synthetic ones), filler pages in other
    languages, and the non-documents. Deterministic for a seed."""
    rng = random.Random(seed)
    web_dir = Path(web_dir) if web_dir is not None else default_web_dir()
    pages: list[WebPage] = []
    index = web_dir / "index.jsonl"
    if index.is_file():
        for line in index.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            body = (web_dir / "pages" / f"{row['id']}.html").read_bytes()
            truth = web_dir / "truth" / f"{row['id']}.txt"
            text = truth.read_text(encoding="utf-8") if truth.is_file() else None
            zh = row["lang"] == "zh"
            url = row.get("url") or (f"http://www.{row['id'][5:13]}.com.cn/news/{row['id'][14:22]}.html" if zh else f"https://www.news-{row['id'][3:11]}.com/article/{row['id'][11:]}")
            declared = row.get("charset_declared")
            ctype = f"text/html; charset={declared}" if declared and rng.random() < 0.6 else "text/html"
            langs = ("zho" if rng.random() < 0.8 else "zho,eng") if zh else ("eng" if rng.random() < 0.85 else "eng,zho" if rng.random() < 0.3 else "eng,fra")
            charset = ("GB18030" if row.get("charset_bytes") == "gb18030" else "UTF-8") if zh else "UTF-8"
            pages.append(WebPage(url=url, body=body, content_type=ctype, languages=langs, charset=charset, text=text, key=row["id"]))
    else:
        for key, body, charset, url, text in _synthetic_zh(rng, 21):
            ctype = f"text/html; charset={charset}" if rng.random() < 0.6 else "text/html"
            pages.append(WebPage(url=url, body=body, content_type=ctype, languages="zho", charset="GB18030" if charset != "utf-8" else "UTF-8", text=text, key=key))
        for i in range(64):
            html = _filler_html(rng, "eng", paragraphs=30)
            pages.append(WebPage(url=f"https://www.news-{i:03d}.com/article/{i}", body=html.encode(), content_type="text/html; charset=utf-8", languages="eng", charset="UTF-8", text=re.sub(r"<[^>]+>", " ", html), key=f"synen-{i:03d}"))
    langs = list(_FILLER_WORDS)
    for i in range(filler):
        lang = langs[i % len(langs)]
        html = _filler_html(rng, lang, paragraphs=rng.randint(6, 24))
        tld = rng.choice(_FILLER_TLDS[lang])
        url = f"https://www.site{i:04d}.{tld}/{lang}/page-{rng.randint(1, 99999)}.html"
        ctype = rng.choice(["text/html; charset=utf-8", "text/html; charset=UTF-8", "text/html"])
        pages.append(WebPage(url=url, body=html.encode("utf-8"), content_type=ctype, languages=lang, charset="UTF-8", text=re.sub(r"<[^>]+>", " ", html), key=f"filler-{i:04d}"))
    # Non-documents: a PDF, an image, a redirect, a 404 (a Chinese one, so that a zh selection
    # that forgets the status and MIME filters would pick them).
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(rng.getrandbits(8) for _ in range(3000)) + b"\n%%EOF\n"
    png = b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(2000))
    pages += [
        WebPage(url="http://www.example.cn/files/report.pdf", body=pdf, content_type="application/pdf", languages="zho", mime_detected="application/pdf", key="pdf"),
        WebPage(url="http://img.example.cn/logo.png", body=png, content_type="image/png", languages=None, mime_detected="image/png", key="png"),
        WebPage(url="http://old.example.cn/", body=b"", content_type="text/html", status=301, languages=None, mime_detected="text/html", location="https://new.example.cn/", key="redirect"),
        WebPage(url="http://www.example.cn/missing.html", body="<html><body><h1>404 未找到</h1></body></html>".encode("utf-8"), content_type="text/html; charset=utf-8", status=404, languages="zho", charset="UTF-8", key="404"),
    ]
    rng.shuffle(pages)
    return pages


# ---- files ----------------------------------------------------------------------------------


def _warc_name(k: int) -> str:
    return f"CC-MAIN-20240802234508-20240803024508-{k:05d}.warc.gz"


def write_warc_file(pages: list[WebPage], name: str, crawl: str, rng: random.Random, start: datetime, *, level: int = 6) -> tuple[bytes, list[CCRecord], bytes, list[CCRecord]]:
    """One WARC file (bytes, records) and its WET (bytes, records) for ``pages``."""
    out = io.BytesIO()
    records: list[CCRecord] = []
    date = start.strftime("%Y-%m-%dT%H:%M:%SZ")

    def add(buf: io.BytesIO, recs: list, wtype: str, rid: str, url: str | None, rdate: str, raw: bytes, **extra):
        member = gzip_member(raw, level)
        recs.append(CCRecord(warc_type=wtype, record_id=rid, url=url, offset=buf.tell(), length=len(member), date=rdate, **extra))
        buf.write(member)

    info_id = _uuid(rng)
    info = f"isPartOf: {crawl}\r\npublisher: Common Crawl\r\ndescription: Wide crawl of the web for August 2024\r\noperator: Common Crawl Admin (info@commoncrawl.org)\r\nformat: WARC File Format 1.1\r\nconformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/\r\n".encode()
    add(out, records, "warcinfo", info_id, None, date, warc_record("warcinfo", [("WARC-Date", date), ("WARC-Record-ID", f"<urn:uuid:{info_id}>"), ("WARC-Filename", name), ("Content-Type", "application/warc-fields")], info))
    wet = io.BytesIO()
    wet_records: list[CCRecord] = []
    wet_name = name.replace(".warc.gz", ".warc.wet.gz")
    wet_info_id = _uuid(rng)
    wet_info = f"Software-Info: ia-web-commons.1.1.10-SNAPSHOT-20240801\r\nExtracted-Date: {_http_date(start)}\r\nrobots: checked via crawler-commons 1.5-SNAPSHOT\r\nisPartOf: {crawl}\r\noperator: Common Crawl Admin (info@commoncrawl.org)\r\ndescription: Wide crawl of the web for August 2024\r\npublisher: Common Crawl\r\n".encode()
    add(wet, wet_records, "warcinfo", wet_info_id, None, date, warc_record("warcinfo", [("WARC-Date", date), ("WARC-Filename", wet_name), ("WARC-Record-ID", f"<urn:uuid:{wet_info_id}>"), ("Content-Type", "application/warc-fields")], wet_info))
    for i, page in enumerate(pages):
        when = start + timedelta(seconds=7 * i + 1)
        rdate = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        req_id, resp_id, meta_id = _uuid(rng), _uuid(rng), _uuid(rng)
        ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        parts = urlsplit(page.url)
        request = (f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\nUser-Agent: CCBot/2.0 (https://commoncrawl.org/faq/)\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nIf-Modified-Since: {_http_date(when - timedelta(days=30))}\r\nAccept-Encoding: br,gzip\r\nHost: {parts.hostname}\r\nConnection: Keep-Alive\r\n\r\n").encode("latin-1")
        add(out, records, "request", req_id, page.url, rdate, warc_record("request", [("WARC-Date", rdate), ("WARC-Record-ID", f"<urn:uuid:{req_id}>"), ("Content-Type", "application/http; msgtype=request"), ("WARC-Warcinfo-ID", f"<urn:uuid:{info_id}>"), ("WARC-IP-Address", ip), ("WARC-Target-URI", page.url)], request))
        head, body = http_response(page, when)
        block = head + body
        digest = _b32_sha1(body)
        hdrs = [("WARC-Date", rdate), ("WARC-Record-ID", f"<urn:uuid:{resp_id}>"), ("Content-Type", "application/http; msgtype=response"), ("WARC-Warcinfo-ID", f"<urn:uuid:{info_id}>"), ("WARC-Concurrent-To", f"<urn:uuid:{req_id}>"), ("WARC-IP-Address", ip), ("WARC-Target-URI", page.url), ("WARC-Protocol", "http/1.1"), ("WARC-Payload-Digest", digest), ("WARC-Block-Digest", _b32_sha1(block))]
        if page.mime_detected:
            hdrs.append(("WARC-Identified-Payload-Type", page.mime_detected))
        add(out, records, "response", resp_id, page.url, rdate, warc_record("response", hdrs, block), page=page, payload_digest=digest, http_payload=body)
        cld = json.dumps({"reliable": True, "text-bytes": len(body), "languages": [{"code": (page.lang or "un")[:2], "code-iso-639-3": page.lang or "und", "text-covered": 0.95, "score": 900.0, "name": page.lang or "unknown"}]})
        meta = f"fetchTimeMs: {rng.randint(20, 900)}\r\ncharset-detected: {page.charset or 'UTF-8'}\r\nlanguages-cld2: {cld}\r\n".encode()
        add(out, records, "metadata", meta_id, page.url, rdate, warc_record("metadata", [("WARC-Date", rdate), ("WARC-Record-ID", f"<urn:uuid:{meta_id}>"), ("Content-Type", "application/warc-fields"), ("WARC-Warcinfo-ID", f"<urn:uuid:{info_id}>"), ("WARC-Concurrent-To", f"<urn:uuid:{resp_id}>"), ("WARC-Target-URI", page.url)], meta))
        if page.text is not None and page.status == 200:
            conv_id = _uuid(rng)
            text = page.text.encode("utf-8")
            chdrs = [("WARC-Target-URI", page.url), ("WARC-Date", rdate), ("WARC-Record-ID", f"<urn:uuid:{conv_id}>"), ("WARC-Refers-To", f"<urn:uuid:{resp_id}>"), ("WARC-Block-Digest", _b32_sha1(text))]
            if page.languages:
                chdrs.append(("WARC-Identified-Content-Language", page.languages))
            chdrs += [("Content-Type", "text/plain")]
            add(wet, wet_records, "conversion", conv_id, page.url, rdate, warc_record("conversion", chdrs, text), page=page)
    return out.getvalue(), records, wet.getvalue(), wet_records


def _index_table(files: list[CCFile], crawl: str):
    import pyarrow as pa

    rows = []
    for f in files:
        for r in f.responses():
            p = r.page
            parts = urlsplit(p.url)
            host = parts.hostname or ""
            labels = host.split(".")
            tld = labels[-1]
            reg = ".".join(labels[-3:]) if len(labels) > 2 and labels[-2] in ("com", "net", "org") and len(tld) == 2 else ".".join(labels[-2:])
            rows.append({
                "url_surtkey": surt(p.url), "url": p.url, "url_host_name": host, "url_host_tld": tld,
                "url_host_2nd_last_part": labels[-2] if len(labels) > 1 else None, "url_host_registered_domain": reg,
                "url_protocol": parts.scheme, "url_port": None, "url_path": parts.path or "/", "url_query": parts.query or None,
                "fetch_time": datetime.strptime(r.date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc), "fetch_status": p.status,
                "fetch_redirect": p.location, "content_digest": (r.payload_digest or "")[5:], "content_mime_type": p.content_type.split(";")[0] if p.content_type else None,
                "content_mime_detected": p.mime_detected, "content_charset": p.charset, "content_languages": p.languages, "content_truncated": None,
                "warc_filename": f.path, "warc_record_offset": r.offset, "warc_record_length": r.length, "warc_segment": f.path.split("/")[3],
            })
    rows.sort(key=lambda r: (r["url_surtkey"], r["fetch_time"]))
    schema = pa.schema([
        ("url_surtkey", pa.string()), ("url", pa.string()), ("url_host_name", pa.string()), ("url_host_tld", pa.string()),
        ("url_host_2nd_last_part", pa.string()), ("url_host_registered_domain", pa.string()), ("url_protocol", pa.string()),
        ("url_port", pa.int32()), ("url_path", pa.string()), ("url_query", pa.string()), ("fetch_time", pa.timestamp("us", tz="UTC")),
        ("fetch_status", pa.int16()), ("fetch_redirect", pa.string()), ("content_digest", pa.string()), ("content_mime_type", pa.string()),
        ("content_mime_detected", pa.string()), ("content_charset", pa.string()), ("content_languages", pa.string()), ("content_truncated", pa.string()),
        ("warc_filename", pa.string()), ("warc_record_offset", pa.int32()), ("warc_record_length", pa.int32()), ("warc_segment", pa.string()),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


def build_ccmirror(
    root: Path | str,
    pages: list[WebPage] | None = None,
    *,
    crawl: str = CRAWL,
    n_files: int = 4,
    index_parts: int = 2,
    row_group_rows: int = 64,
    seed: int = 0,
    level: int = 6,
) -> CCInfo:
    """Write the mirror under ``root`` and describe it."""
    root = Path(root)
    pages = build_pages(seed=seed) if pages is None else pages
    rng = random.Random(seed + 1)
    base = root / "crawl-data" / crawl
    files: list[CCFile] = []
    per_file = -(-len(pages) // n_files)
    for k in range(n_files):
        chunk = pages[k * per_file : (k + 1) * per_file]
        seg = SEGMENTS[k % len(SEGMENTS)]
        name = _warc_name(k)
        start = _EPOCH + timedelta(minutes=37 * k)
        data, records, wet_data, wet_records = write_warc_file(chunk, name, crawl, rng, start, level=level)
        rel = f"crawl-data/{crawl}/segments/{seg}/warc/{name}"
        wet_rel = f"crawl-data/{crawl}/segments/{seg}/wet/{name.replace('.warc.gz', '.warc.wet.gz')}"
        for path, blob in ((rel, data), (wet_rel, wet_data)):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(blob)
        files.append(CCFile(path=rel, size=len(data), records=records, wet_path=wet_rel, wet_size=len(wet_data), wet_records=wet_records))
    base.mkdir(parents=True, exist_ok=True)
    (base / "warc.paths.gz").write_bytes(gzip.compress("".join(f.path + "\n" for f in files).encode(), mtime=0))
    (base / "wet.paths.gz").write_bytes(gzip.compress("".join(f.wet_path + "\n" for f in files).encode(), mtime=0))
    # the columnar index: sorted by SURT key, cut into parts and row groups
    import pyarrow.parquet as pq

    table = _index_table(files, crawl)
    per_part = -(-table.num_rows // index_parts)
    index_paths, sizes = [], {}
    for k in range(index_parts):
        rel = f"cc-index/table/cc-main/warc/crawl={crawl}/subset=warc/part-{k:05d}-{uuid.UUID(int=rng.getrandbits(128), version=4)}.c000.gz.parquet"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(k * per_part, per_part), root / rel, row_group_size=row_group_rows, compression="gzip", write_statistics=True)
        index_paths.append(rel)
        sizes[rel] = (root / rel).stat().st_size
    diag = f"cc-index/table/cc-main/warc/crawl={crawl}/subset=crawldiagnostics/part-00000-{uuid.UUID(int=rng.getrandbits(128), version=4)}.c000.gz.parquet"
    (root / diag).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, 0), root / diag)
    (base / "cc-index-table.paths.gz").write_bytes(gzip.compress("".join(p + "\n" for p in [*index_paths, diag]).encode(), mtime=0))
    crawls = [crawl, *OLDER_CRAWLS]
    collinfo = [{"id": c, "name": f"{c} Index", "timegate": f"https://index.commoncrawl.org/{c}/", "cdx-api": f"https://index.commoncrawl.org/{c}-index", "from": "2024-08-02T23:45:08", "to": "2024-08-16T11:24:39"} for c in crawls]
    (root / "collinfo.json").write_text(json.dumps(collinfo, indent=1), encoding="utf-8")
    return CCInfo(root=root, crawl=crawl, files=files, index_paths=index_paths, index_sizes=sizes, crawls=crawls)


# ---- the server -----------------------------------------------------------------------------


class _ThrottlingHandler(_Handler):
    def setup(self):
        super().setup()
        # No Nagle: headers and body go out as separate writes, and with delayed ACKs every
        # small ranged GET would wait 40 ms on loopback (a server artifact, not the client's cost).
        import socket

        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self, path: str, head: bool):
        mirror: CCMirrorServer = self.server.mirror  # type: ignore[assignment]
        hit = mirror._take_throttle(path) if self.command == "GET" else None
        if hit is not None:
            status, retry_after = hit
            self._empty(status, {"Retry-After": str(retry_after)} if retry_after is not None else {})
            return
        super()._serve(path, head)


class _ThrottlingServer(_Server):
    def __init__(self, mirror: "CCMirrorServer"):
        self.mirror = mirror
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), _ThrottlingHandler)


class CCMirrorServer(MirrorServer):
    """MirrorServer with ``throttle[path] = (n, status, retry_after)``: the next ``n`` GETs of a
    path (or of any path ending with it) get ``status`` and ``Retry-After: retry_after``."""

    def __init__(self, root, **kw):
        super().__init__(root, **kw)
        self.throttle: dict[str, tuple[int, int, float | int | None]] = {}

    def start(self) -> "CCMirrorServer":
        if self._httpd is not None:
            return self
        self._httpd = _ThrottlingServer(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"CCMirrorServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def _take_throttle(self, path: str):
        with self._lock:
            key = self._match_key(self.throttle, path)
            if key is None:
                return None
            n, status, retry_after = self.throttle[key]
            if n <= 1:
                del self.throttle[key]
            else:
                self.throttle[key] = (n - 1, status, retry_after)
            return status, retry_after
