"""The status page is one self-contained file with the stable ids and a complete vi/en dictionary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "hub" / "runtime" / "static" / "status.html"
IDS = ["lang-toggle", "hub-ingest-rate", "hub-delivered-rate", "hub-dlq-total", "hub-lag",
       "updated-at", "error-banner", "title"]
STATES = ["RUNNING", "PAUSED", "STOPPED", "RETRYING", "FAILED", "UNASSIGNED"]


@pytest.fixture(scope="module")
def html() -> str:
    assert PAGE.is_file(), f"{PAGE} is missing"
    return PAGE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def i18n(html: str) -> dict[str, dict[str, str]]:
    found = re.search(r"/\* i18n:begin \*/(.*?)/\* i18n:end \*/", html, re.S)
    assert found, "the dictionary must sit between /* i18n:begin */ and /* i18n:end */"
    return json.loads(found.group(1))


def test_nothing_is_loaded_from_elsewhere(html: str):
    # A government network may have no internet: no URL of any kind, not even protocol-relative.
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", html, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"@import", html, re.I)


def test_the_stable_ids_and_hooks_are_there(html: str):
    for element_id in IDS:
        assert re.search(rf"""\bid=["']{element_id}["']""", html), element_id
    assert re.search(r"""<h1\b[^>]*\bid=["']title["']""", html)
    for hook in ("data-source", "data-subscriber", "data-connector", "data-state", "data-value", "data-ready",
                 "circuit-open", "last-error", "eduhub.lang", "status.json"):
        assert hook in html, hook
    assert 'cache: "no-store"' in html


def test_json_data_never_goes_through_html_parsing(html: str):
    assert "innerHTML" not in html and "outerHTML" not in html and "insertAdjacentHTML" not in html


def test_vi_and_en_have_the_same_keys(i18n: dict[str, dict[str, str]]):
    assert set(i18n) == {"vi", "en"}
    assert set(i18n["vi"]) == set(i18n["en"])
    for lang, table in i18n.items():
        assert all(isinstance(v, str) and v.strip() for v in table.values()), lang
        assert {f"state_{state}" for state in STATES} <= set(table), lang


def test_the_agreed_wording(i18n: dict[str, dict[str, str]]):
    vi, en = i18n["vi"], i18n["en"]
    assert vi["title"] == "Trạng thái EduHub — Sở Giáo dục và Đào tạo Hải Phòng"
    assert en["title"] == "EduHub status — Hải Phòng Department of Education and Training"
    # The toggle names the language it switches to.
    assert (vi["toggle"], en["toggle"]) == ("English", "Tiếng Việt")
    expected = {"sources": ("Nguồn dữ liệu", "Sources"), "subscribers": ("Bên nhận", "Subscribers"),
                "perSecond": ("Sự kiện/giây", "events/s"), "dlq": ("Hàng đợi lỗi (DLQ)", "Dead letters (DLQ)"),
                "lag": ("Độ trễ tiêu thụ", "Consumer lag"), "connectors": ("Bộ kết nối", "Connectors"),
                "lastError": ("Lỗi gần nhất", "Last error"), "updatedAt": ("Cập nhật lúc", "Updated at"),
                "unreachable": ("Không kết nối được tới hub", "Cannot reach the hub"),
                "state_RUNNING": ("Đang chạy", "Running"), "state_PAUSED": ("Tạm dừng", "Paused"),
                "state_STOPPED": ("Đã dừng", "Stopped"), "state_RETRYING": ("Đang thử lại", "Retrying"),
                "state_FAILED": ("Lỗi", "Failed"), "state_UNASSIGNED": ("Chưa gán", "Unassigned")}
    for key, (in_vi, in_en) in expected.items():
        assert (vi[key], en[key]) == (in_vi, in_en), key
