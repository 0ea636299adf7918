"""Which repository-API key the control plane sends to a slot's servers (documented in
examples/compose/README.md and the README): the slot's file, else the slot's variable,
else the one key of every slot, else none."""

from __future__ import annotations

import pytest

from triton_slots.admin import admin_key

NAMES = ("TURNOUT_TRITON_ADMIN_KEY", "TURNOUT_TRITON_ADMIN_KEY_FILE",
         "TURNOUT_TRITON_ADMIN_KEY_BLUE", "TURNOUT_TRITON_ADMIN_KEY_BLUE_FILE",
         "TURNOUT_TRITON_ADMIN_KEY_GREEN", "TURNOUT_TRITON_ADMIN_KEY_GREEN_FILE")


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def test_none_configured_sends_none():
    assert admin_key("blue") is None and admin_key(None) is None


def test_a_slots_own_key_comes_first_and_stays_its_own(monkeypatch, tmp_path):
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY", "shared")
    assert admin_key("blue") == admin_key("green") == admin_key(None) == "shared"
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY_BLUE", "blue-var")
    assert (admin_key("blue"), admin_key("green")) == ("blue-var", "shared")
    (tmp_path / "blue").write_text("  blue-file\n")
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY_BLUE_FILE", str(tmp_path / "blue"))
    assert (admin_key("blue"), admin_key("green")) == ("blue-file", "shared")
    (tmp_path / "all").write_text("all-file")
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY_FILE", str(tmp_path / "all"))
    assert (admin_key("blue"), admin_key("green"), admin_key(None)) == \
        ("blue-file", "all-file", "all-file")


@pytest.mark.parametrize("content, problem", [(None, "cannot read the key"),
                                              ("\n \n", "the file is empty")])
def test_a_bad_key_file_is_an_error_never_no_key(monkeypatch, tmp_path, content, problem):
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY", "shared")  # no silent fallback
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY_GREEN_FILE", str(path))
    with pytest.raises(ValueError, match=f"^TURNOUT_TRITON_ADMIN_KEY_GREEN_FILE={path}: "
                                         f"{problem}"):
        admin_key("green")
