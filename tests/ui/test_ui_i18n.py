"""Message catalogues: completeness, placeholders, English fallback and the app-catalogue rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.scenario import DOMAINS
from shared.ui import i18n

ROOT = Path(__file__).resolve().parents[2]
UI_SOURCES = [ROOT / "streamlit_app.py", *sorted((ROOT / "shared" / "ui").glob("*.py")), *sorted(ROOT.glob("apps/*/ui.py"))]
LITERAL_KEY = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+)["']\s*[,)]""")
TABLE_KEY = re.compile(r"""["']((?:nav|home\.blurb)\.[a-z_]+)["']""")


def shared_catalogue(language: str) -> dict[str, str]:
    return json.loads((i18n.SHARED_LOCALES / f"{language}.json").read_text(encoding="utf-8"))


def test_every_used_key_is_in_english() -> None:
    english = i18n.catalogues()["en"]
    used = set()
    for source in UI_SOURCES:
        text = source.read_text(encoding="utf-8")
        used |= set(LITERAL_KEY.findall(text)) | set(TABLE_KEY.findall(text))
    assert len(used) > 50
    assert sorted(key for key in used if key not in english) == []


def test_computed_keys_are_in_english() -> None:
    english = i18n.catalogues()["en"]
    computed = [f"domain.{domain}" for domain in DOMAINS]
    computed += [f"jobs.status.{state}" for state in ("running", "stopping", "finished", "stopped", "failed", "lost")]
    assert [key for key in computed if key not in english] == []


def test_chinese_catalogue_is_complete() -> None:
    english, chinese = shared_catalogue("en"), shared_catalogue("zh-CN")
    assert sorted(set(english) - set(chinese)) == []
    assert sorted(set(chinese) - set(english)) == []


@pytest.mark.parametrize("language", ["zh-CN"])
def test_placeholders_match_english(language: str) -> None:
    english, other = shared_catalogue("en"), shared_catalogue(language)
    mismatched = {key: (i18n.placeholders(english[key]), i18n.placeholders(other[key])) for key in english if key in other}
    assert {key: pair for key, pair in mismatched.items() if pair[0] != pair[1]} == {}


def test_translate_fills_placeholders() -> None:
    assert i18n.translate("runs.list.title", "en", count=3) == "Run folders (3)"
    assert i18n.translate("runs.list.title", "zh-CN", count=3) == "运行目录（3）"


def test_missing_chinese_key_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(i18n._registered["en"], "test.english_only", "Only {what} in English")
    i18n.reload_catalogues()
    try:
        assert i18n.translate("test.english_only", "zh-CN", what="this") == "Only this in English"
    finally:
        monkeypatch.undo()
        i18n.reload_catalogues()


def test_missing_english_key_is_recorded() -> None:
    assert i18n.translate("test.nowhere", "zh-CN") == "test.nowhere"
    assert "test.nowhere" in i18n.missing_keys()
    i18n._missing.discard("test.nowhere")


def test_registered_entries_override_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(i18n._registered, "zh-CN", {"nav.runs": "运行"})
    i18n.reload_catalogues()
    try:
        assert i18n.translate("nav.runs", "zh-CN") == "运行"
        assert i18n.translate("nav.runs", "en") == "Runs"
    finally:
        monkeypatch.undo()
        i18n.reload_catalogues()


def test_register_rejects_unknown_language() -> None:
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        i18n.register_catalogue("fr", {"nav.runs": "Exécutions"})


def test_app_catalogues_use_their_prefix() -> None:
    for language in i18n.LANGUAGES:
        for path in i18n.app_catalogue_files(language):
            app = path.parent.parent.name
            entries = json.loads(path.read_text(encoding="utf-8"))
            assert [key for key in entries if not key.startswith(f"{app}.")] == [], path


def test_app_catalogues_are_complete_in_english() -> None:
    for path in i18n.app_catalogue_files("zh-CN"):
        english_path = path.with_name("en.json")
        chinese = json.loads(path.read_text(encoding="utf-8"))
        english = json.loads(english_path.read_text(encoding="utf-8")) if english_path.exists() else {}
        assert sorted(set(chinese) - set(english)) == [], path
