"""In process: the model servers' logs under --log-dir stay bounded in number."""

import os

from serving.upstreams.servers import prune_logs


def test_only_the_newest_model_server_logs_are_kept_and_other_files_are_left_alone(tmp_path):
    for age in range(30):
        log = tmp_path / f"upstream-v{age % 3 + 1}-{40000 + age}.log"
        log.write_text("uvicorn log\n")
        os.utime(log, (1_700_000_000 - age, 1_700_000_000 - age))  # age 0 is the newest
    (tmp_path / "notes.txt").write_text("mine")
    deleted = prune_logs(tmp_path, keep=5)
    kept = sorted(p.name for p in tmp_path.glob("upstream-v*.log"))
    assert kept == sorted(f"upstream-v{age % 3 + 1}-{40000 + age}.log" for age in range(5))
    assert len(deleted) == 25 and (tmp_path / "notes.txt").exists()


def test_pruning_an_empty_or_missing_directory_deletes_nothing(tmp_path):
    assert prune_logs(tmp_path, keep=3) == []
    assert prune_logs(tmp_path / "absent", keep=3) == []
