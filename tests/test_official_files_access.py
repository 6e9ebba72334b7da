"""Where the official reference files come from: the shared folder, else the hub, else one clear skip."""

import pytest

import golden


@pytest.fixture
def no_shared_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(golden, "OFFICIAL_DIR", tmp_path / "absent")
    monkeypatch.delenv("PHI3V_SHARED_DIR", raising=False)
    golden._official_files.cache_clear()
    yield
    golden._official_files.cache_clear()


def test_missing_shared_files_are_fetched_from_the_hub_alone(no_shared_folder, tmp_path, monkeypatch):
    asked = []

    def fake_download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr(golden, "snapshot_download", fake_download)
    assert golden.official_dir() == tmp_path
    assert asked == [("microsoft/Phi-3-vision-128k-instruct", list(golden.OFFICIAL_FILES))]
    assert not any(name.endswith(".safetensors") for name in golden.OFFICIAL_FILES), "config and tokenizer, no weights"


def test_offline_without_shared_folder_skips_with_one_reason(no_shared_folder, monkeypatch):
    def offline(**_):
        raise ConnectionError("no network")

    monkeypatch.setattr(golden, "snapshot_download", lambda repo_id, allow_patterns: offline())
    with pytest.raises(pytest.skip.Exception, match="neither in .* nor reachable on the hub .*PHI3V_SHARED_DIR"):
        golden.official_dir()


def test_a_named_shared_folder_without_the_files_fails(no_shared_folder, monkeypatch):
    monkeypatch.setenv("PHI3V_SHARED_DIR", str(golden.OFFICIAL_DIR))
    with pytest.raises(AssertionError, match="missing"):
        golden.official_dir()
