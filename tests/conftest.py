"""Session fixtures of the full profile's path on local stand-ins (see series_runs.py); the tiny series'
`tiny_run_dir` is in the repository's root conftest.py, beside the nbval hooks it reads."""

import pytest
import series_runs


@pytest.fixture(scope="session")
def full_profile_stand_ins(tmp_path_factory):
    stand_ins = series_runs.full_profile_stand_ins(tmp_path_factory.mktemp("full-path"))
    yield stand_ins
    stand_ins["server"].shutdown()


@pytest.fixture(scope="session")
def full_path_run_dir(full_profile_stand_ins):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "disabled")
        return series_runs.run_full_path_series(full_profile_stand_ins, full_profile_stand_ins["root"] / "run")
