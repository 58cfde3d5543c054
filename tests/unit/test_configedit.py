"""configedit: one setting changed in config.toml's text, everything else kept, written atomically."""

from __future__ import annotations

import threading
import tomllib

import pytest

from hybrid_engine import configedit
from hybrid_engine.configedit import SettingRefused, edited_text

TEXT = """\
# top comment
[budgets]  # money
daily_usd = 1.0  # per day
# a comment at the end of the table

[providers.openai]
concurrency = 2
"""


def test_a_key_that_exists_is_replaced_on_its_own_line():
    out = edited_text(TEXT, "budgets", "daily_usd", 2.5)
    assert out == TEXT.replace("daily_usd = 1.0  # per day", "daily_usd = 2.5  # per day")


def test_a_replaced_line_keeps_its_own_comment():
    text = '[budgets]\ndaily_usd = 1.5   # my cap, see notes\n[notes]\nfolder = "a#b" # vault\n'
    out = edited_text(text, "budgets", "daily_usd", 3)
    out = edited_text(out, "notes", "folder", "c#d")
    assert out == '[budgets]\ndaily_usd = 3   # my cap, see notes\n[notes]\nfolder = "c#d" # vault\n'


def test_a_new_key_goes_after_the_last_setting_of_its_table():
    out = edited_text(TEXT, "budgets", "monthly_usd", 30)
    assert "daily_usd = 1.0  # per day\nmonthly_usd = 30\n# a comment at the end" in out
    assert tomllib.loads(out)["budgets"] == {"daily_usd": 1.0, "monthly_usd": 30}


def test_a_new_table_is_added_at_the_end():
    out = edited_text(TEXT, "providers.local", "base_url", "http://127.0.0.1:8080/v1")
    assert out.startswith(TEXT)
    assert tomllib.loads(out)["providers"] == {"openai": {"concurrency": 2},
                                               "local": {"base_url": "http://127.0.0.1:8080/v1"}}


def test_none_removes_the_line_and_nothing_else():
    out = edited_text(TEXT, "budgets", "daily_usd", None)
    assert out == TEXT.replace("daily_usd = 1.0  # per day\n", "")


@pytest.mark.parametrize("value", ['C:\\Notes "x"', "~/vault\nnext = 1", "tab\there", "ünïcode ☃", "#not-a-comment"])
def test_strings_are_escaped_so_they_read_back_as_written(value):
    assert tomllib.loads(edited_text("", "notes", "folder", value))["notes"]["folder"] == value


def test_an_update_refused_by_settings_leaves_the_file_as_it_was(he_home):
    he_home.mkdir(parents=True)
    path = he_home / "config.toml"
    path.write_text(TEXT)
    with pytest.raises(SettingRefused, match=r"\[budgets\] daily_usd: expected a finite number of USD >= 0"):
        configedit.update("budgets", "daily_usd", -3)
    assert path.read_text() == TEXT


def test_a_notes_folder_that_is_not_text_is_refused(he_home):
    with pytest.raises(SettingRefused, match=r"\[notes\] folder: expected a folder path"):
        configedit.update("notes", "folder", 5)


def test_a_setting_written_as_a_dotted_key_is_not_edited_blindly(he_home):
    he_home.mkdir(parents=True)
    path = he_home / "config.toml"
    path.write_text("budgets.daily_usd = 1\n")
    with pytest.raises(SettingRefused, match="edit it by hand"):
        configedit.update("budgets", "daily_usd", 2)
    assert path.read_text() == "budgets.daily_usd = 1\n"


def test_a_concurrent_reader_only_ever_sees_a_whole_file(he_home):
    he_home.mkdir(parents=True)
    path = he_home / "config.toml"
    path.write_text(TEXT)
    done = threading.Event()
    seen: list[dict] = []

    def read_until_done():
        while not done.is_set():
            seen.append(tomllib.loads(path.read_text()))  # a half-written file would not parse

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(200):
            configedit.update("budgets", "monthly_usd", i)
    finally:
        done.set()
        reader.join()
    assert seen and all(conf["providers"]["openai"] == {"concurrency": 2} for conf in seen)
    assert tomllib.loads(path.read_text())["budgets"]["monthly_usd"] == 199
    assert not list(he_home.glob("*.tmp"))


def test_two_writers_at_once_lose_neither_change(he_home):
    def write(key, n):
        for i in range(n):
            configedit.update("budgets", key, i)
    threads = [threading.Thread(target=write, args=("daily_usd", 50)),
               threading.Thread(target=write, args=("monthly_usd", 50))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tomllib.loads((he_home / "config.toml").read_text())["budgets"] == {"daily_usd": 49, "monthly_usd": 49}
