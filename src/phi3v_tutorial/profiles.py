"""Profiles: `params/<profile>.yaml`, the one place a run's settings come from, plus overrides.

    python -m phi3v_tutorial.run_notebooks --profile tiny -p seed 7 -p max_steps 200
    python -m phi3v_tutorial.training --profile tiny -p seed 7

An override is papermill's `-p NAME VALUE`: the value is read as a number when it is one (`7`,
`2e-3`), else as YAML (`false` a bool, `null` None, anything else text), and NAME must be a key the
profile already has, so a typo fails instead of being ignored.
"""

from pathlib import Path

import yaml

from phi3v_tutorial.paths import REPO_ROOT

PARAMS_DIR = REPO_ROOT / "params"
RUNNER_KEYS = {"cell_timeout"}  # keys for the series runner itself, not passed to notebooks


class ProfileError(ValueError):
    """A profile that cannot be used: a missing file, a malformed one, an unknown override."""


def profile_file(profile: str, params_dir: Path = PARAMS_DIR) -> Path:
    return Path(params_dir) / f"{profile}.yaml"


def load_profile(params_file: Path, overrides: dict | None = None) -> dict:
    """The profile's values with `overrides` applied (see `with_overrides`)."""
    params_file = Path(params_file)
    if not params_file.is_file():
        profiles = ", ".join(sorted(path.stem for path in params_file.parent.glob("*.yaml"))) or "none"
        raise ProfileError(
            f"no parameters for profile {params_file.stem!r}: {params_file} does not exist (profiles there: {profiles})"
        )
    values = yaml.safe_load(params_file.read_text()) or {}
    if not isinstance(values, dict):
        raise ProfileError(f"{params_file} must map parameter names to values")
    if "run_dir" in values:
        raise ProfileError(f"{params_file} sets run_dir, which the runner sets itself (--run-dir)")
    return with_overrides(values, overrides or {}, params_file)


def with_overrides(values: dict, overrides: dict, params_file: Path | str = "the profile") -> dict:
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ProfileError(f"{', '.join(unknown)}: not a key of {params_file} (its keys: {', '.join(values)})")
    return {**values, **overrides}


def parse_overrides(pairs: list[list[str]] | None) -> dict:
    """`[["seed", "7"], ["report_to", "none"]]` (argparse's `-p NAME VALUE`, repeated) -> {"seed": 7, ...}."""
    return {name: parse_value(value) for name, value in pairs or []}


def parse_value(text: str):
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def add_override_option(parser) -> None:
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), dest="overrides",
                        help="override one of the profile's values, as papermill's -p (repeatable)")
