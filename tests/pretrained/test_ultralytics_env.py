"""compkit.pretrained.ultralytics_env: ultralytics always runs offline and with safe loading, said when it overrides."""

from __future__ import annotations

import os

from compkit.pretrained.ultralytics_env import OFFLINE_AND_SAFE, prepare_offline


def test_a_users_other_value_is_replaced_with_a_warning(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COMPKIT_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))  # restored afterwards, as the two below
    monkeypatch.setenv("YOLO_OFFLINE", "0")
    monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", "1")
    prepare_offline()
    assert all(os.environ[name] == "1" for name in OFFLINE_AND_SAFE)
    assert capsys.readouterr().err.splitlines() == [
        "warning: YOLO_OFFLINE: '0' replaced by '1': compkit runs ultralytics offline and with safe loading"
    ]
    prepare_offline()
    assert capsys.readouterr().err == "", "said once"
