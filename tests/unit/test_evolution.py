"""`eduhub schemas check` against git history: incompatible changes are refused, naming the field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.contract.evolution import compare

ROOT = Path(__file__).resolve().parents[2]


def registration() -> dict:
    return json.loads((ROOT / "schemas/exam/registration.avsc").read_text())


def test_adding_an_optional_field_and_an_enum_symbol_is_compatible():
    new = registration()
    new["fields"].append({"name": "note", "type": ["null", "string"], "default": None, "doc": "x"})
    assert compare(new, registration(), subject="s", against="v1") is None


def test_a_new_required_field_without_default_is_named():
    new = registration()
    new["fields"].append({"name": "exam_room", "type": "string", "doc": "x"})
    problem = compare(new, registration(), subject="edu.exam.registration-value", against="v1")
    assert problem is not None and problem.fields == ("exam_room",)
    assert "reader_field_missing_default_value" in problem.kinds
    assert "exam_room" in str(problem)


def test_a_removed_enum_symbol_is_named_with_its_field():
    new = registration()
    gender = next(f for f in new["fields"] if f["name"] == "gender")
    gender["type"]["symbols"] = ["MALE"]
    problem = compare(new, registration(), subject="s", against="v1")
    assert problem.fields == ("gender",) and "missing_enum_symbols" in problem.kinds
    assert "FEMALE" in str(problem)


def test_a_change_inside_a_nested_record_names_the_enclosing_field():
    # Avro's checker reports a changed branch of a union at the union, not deeper.
    new = registration()
    cert = next(f for f in new["fields"] if f["name"] == "exemption_certificate")
    cert["type"][1]["fields"][0]["type"] = "int"
    assert compare(new, registration(), subject="s", against="v1").fields == ("exemption_certificate",)


@pytest.fixture
def schema_repo(tmp_path):
    """A git repository holding a copy of schemas/, one commit deep."""
    if shutil.which("git") is None:
        pytest.fail("git is needed for `eduhub schemas check`")
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "schemas", repo / "schemas")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "schemas"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    return repo


def run_check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", "schemas", "check", "--no-registry"], cwd=ROOT,
                          env={**os.environ, "EDUHUB_SCHEMA_DIR": str(repo / "schemas")},
                          capture_output=True, text=True)


def test_cli_passes_an_unchanged_tree(schema_repo):
    done = run_check(schema_repo)
    assert done.returncode == 0, done.stderr
    assert "compatible with git history" in done.stdout


@pytest.mark.parametrize("change, field", [("required", "exam_room"), ("enum", "gender")])
def test_cli_rejects_an_incompatible_working_tree(schema_repo, change, field):
    path = schema_repo / "schemas/exam/registration.avsc"
    schema = json.loads(path.read_text())
    if change == "required":
        schema["fields"].append({"name": "exam_room", "type": "string", "doc": "x"})
    else:
        next(f for f in schema["fields"] if f["name"] == "gender")["type"]["symbols"] = ["MALE"]
    path.write_text(json.dumps(schema))
    done = run_check(schema_repo)
    assert done.returncode == 1
    assert "INCOMPATIBLE edu.exam.registration-value" in done.stderr and f"field {field}" in done.stderr
