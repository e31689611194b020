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


def test_ultralytics_logs_plain_lines_without_its_argument_dump_where_stdout_is_a_file(monkeypatch, tmp_path):
    import io
    import logging

    from compkit.pretrained.ultralytics_env import plain_logging

    monkeypatch.setenv("COMPKIT_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)
    prepare_offline()
    from ultralytics.utils import LOGGER, colorstr
    from ultralytics.utils.checks import print_args

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    LOGGER.addHandler(handler)
    try:
        with plain_logging(io.StringIO()):  # not a terminal
            print_args({f"key{i}": i for i in range(40)})
            LOGGER.info(f"{colorstr('bold', 'Starting training for')} 3 epochs...")
        LOGGER.info(colorstr("bold", "outside"))
    finally:
        LOGGER.removeHandler(handler)
    lines = log.getvalue().splitlines()
    assert lines[0] == "Starting training for 3 epochs...", "plain text, and the argument dump left out"
    assert lines[1:] == ["\x1b[1moutside\x1b[0m"], "as ultralytics logs it outside the block"
