"""report_files: the runbooks' records and reports, written in one task."""

import stat

from conftest import run_module


def test_report_files_writes_each_report_once_atomically_and_refuses_a_name_with_a_folder(tmp_path):
    folder = tmp_path / "reports" / "db1"
    files = [{"name": "deploy-1.json", "content": '{"outcome": "deployed"}\n'},
             {"name": "deploy-1.md", "content": "# Deployment deploy-1\n"}]
    checked = run_module("report_files", {"path": str(folder), "files": files}, check_mode=True)
    assert checked["changed"] is True and not folder.exists(), "check mode writes nothing"
    written = run_module("report_files", {"path": str(folder), "files": files})
    assert written["written"] == [str(folder), str(folder / "deploy-1.json"), str(folder / "deploy-1.md")]
    assert (folder / "deploy-1.json").read_text() == '{"outcome": "deployed"}\n'
    assert {name: stat.S_IMODE((folder / name).stat().st_mode) for name in ("deploy-1.json", "deploy-1.md")} == {
        "deploy-1.json": 0o640, "deploy-1.md": 0o640}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert run_module("report_files", {"path": str(folder), "files": files})["changed"] is False
    assert sorted(path.name for path in folder.iterdir()) == ["deploy-1.json", "deploy-1.md"], "no temporary left"
    refused = run_module("report_files", {"path": str(folder), "files": [
        {"name": "../escape.json", "content": "{}"}, {"name": "fine.json", "content": "{}"}]})
    assert refused["failed"] is True and refused["msg"] == (
        "report file name(s) '../escape.json' name a folder too: give plain file names, the folder is path; "
        "nothing was written")
    assert not (tmp_path / "reports" / "escape.json").exists() and not (folder / "fine.json").exists()
    bad_mode = run_module("report_files", {"path": str(folder), "files": files, "mode": "rw-r"})
    assert bad_mode["failed"] is True and "mode 'rw-r' is not an octal mode" in bad_mode["msg"]
